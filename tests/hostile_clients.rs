//! Clients that hold the daemon's connections without finishing requests (slowloris), or hold
//! many progress streams, against a real daemon: they are cut off or capped, and a normal user
//! is served and spawns all the while. Attackers connect from other loopback addresses
//! (127.0.0.2, 127.0.0.3), so per-client caps are per attacker, as they would be in production.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, ALICE_TOKEN, HUB_TOKEN};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn addr(daemon: &Daemon) -> SocketAddr {
    daemon.url.trim_start_matches("http://").parse().expect("the daemon's address")
}

/// A connection to the daemon from `from` (a loopback address of the test's choosing).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().expect("an address"), 0)).expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Reads until the daemon closes the connection; how long that took, or `None` if it was
/// still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().expect("an address")).timeout(Duration::from_secs(120)).build().expect("client")
}

async fn healthz(daemon: &Daemon) -> reqwest::StatusCode {
    client_from("127.0.0.1").get(format!("{}/healthz", daemon.url)).send().await.expect("healthz answers").status()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_one_client_cannot_hold_every_connection() {
    let extra = "\n[http]\nheader_read_timeout = 4\nbody_timeout = 4\nmax_connections_per_client = 50\n";
    let daemon = Daemon::start(DaemonOptions { extra_auth: extra, ..Default::default() });
    let to = addr(&daemon);

    // Half a request line, then nothing: kept forever before the header timeout existed.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from("127.0.0.2", to).await;
        s.write_all(b"GET /api/v1/prof").await.expect("write half a request line");
        slow.push(s);
    }
    // A body promised and never sent.
    let mut stalled_body = connect_from("127.0.0.2", to).await;
    let head = format!("PUT /api/v1/users/alice/server HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {ALICE_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"profile\":");
    stalled_body.write_all(head.as_bytes()).await.expect("write a request head");

    assert_eq!(healthz(&daemon).await, 200, "a normal client is served while slow ones hang");
    for (i, s) in slow.iter_mut().enumerate() {
        let closed = closed_within(s, Duration::from_secs(20)).await;
        assert!(closed.is_some(), "slow connection {i} still open 20 s later (header_read_timeout = 4)");
    }
    let closed = closed_within(&mut stalled_body, Duration::from_secs(20)).await;
    assert!(closed.is_some(), "a stalled body kept its connection 20 s (body_timeout = 4)");
    assert_eq!(healthz(&daemon).await, 200, "and after they were cut off");

    // One client holds at most max_connections_per_client; the next is closed at once, and
    // other clients are still served.
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(connect_from("127.0.0.3", to).await);
    }
    let mut refused = connect_from("127.0.0.3", to).await;
    let closed = closed_within(&mut refused, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "a 51st connection of one client was kept (max_connections_per_client = 50)");
    assert_eq!(healthz(&daemon).await, 200, "another client is served while one holds its cap");
    let metrics = client_from("127.0.0.1").get(format!("{}/metrics", daemon.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l.starts_with("fleetspawn_http_connections_refused_total ") && !l.ends_with(" 0")), "{metrics}");
    drop(held);
    // Its slots come back when it closes them.
    let mut served = false;
    for _ in 0..50 {
        let mut s = connect_from("127.0.0.3", to).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await;
        served = answer.starts_with("HTTP/1.1 200");
        if served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "closed connections free the client's slots");
}

#[tokio::test]
async fn idle_connections_and_progress_subscribers_do_not_stop_a_user_from_spawning() {
    // Idle connections are kept a minute (the worst a deployment could configure here), so
    // the test does not pass merely because the header timeout closed them.
    let extra = "\n[http]\nheader_read_timeout = 60\n";
    let daemon = Daemon::start(DaemonOptions { extra_auth: extra, max_concurrent_spawns: 200, ..Default::default() });
    let to = addr(&daemon);
    let hub = client_from("127.0.0.3");
    let server = |user: &str| format!("{}/api/v1/users/{user}/server", daemon.url);

    // 125 users with a spawn that stays pending ("huge" cannot be scheduled), 8 progress
    // streams each: 1,000 subscribers that never end.
    let users: Vec<String> = (0..125).map(|i| common::unique(&format!("hostile{i}"))).collect();
    let starts = futures::future::join_all(users.iter().map(|u| hub.put(server(u)).bearer_auth(HUB_TOKEN).json(&json!({ "profile": "huge" })).send())).await;
    for (user, answer) in users.iter().zip(starts) {
        let answer = answer.expect("start answers");
        assert_eq!(answer.status(), 202, "{user}: {}", answer.text().await.unwrap_or_default());
    }
    let subscribe = |user: &String| hub.get(format!("{}/progress", server(user))).bearer_auth(HUB_TOKEN).send();
    let streams = futures::future::join_all(users.iter().flat_map(|u| std::iter::repeat_n(u, 8)).map(subscribe)).await;
    let streams: Vec<reqwest::Response> = streams.into_iter().map(|r| r.expect("progress answers")).collect();
    assert!(streams.iter().all(|r| r.status() == 200), "{:?}", streams.iter().map(reqwest::Response::status).collect::<std::collections::BTreeSet<_>>());

    // 2,000 idle connections from one address (the per-client cap closes half of them).
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(connect_from("127.0.0.2", to).await);
    }

    // A normal user spawns and follows the progress to ready.
    let alice = client_from("127.0.0.1");
    let started = alice.put(server("alice")).bearer_auth(ALICE_TOKEN).json(&json!({ "profile": "a" })).send().await.expect("start answers");
    assert_eq!(started.status(), 202, "{}", started.text().await.unwrap_or_default());
    let progress = alice.get(format!("{}/progress", server("alice"))).bearer_auth(ALICE_TOKEN).send().await.expect("progress answers");
    assert_eq!(progress.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(90), progress.text()).await.expect("alice's progress ends").expect("reads");
    assert!(text.contains("event: ready"), "{text}\nlog:\n{}", daemon.log());
    let status: Value = alice.get(server("alice")).bearer_auth(ALICE_TOKEN).send().await.expect("status").json().await.expect("JSON");
    assert_eq!(status["state"], "running", "{status}");

    drop(idle);
    drop(streams);
    let stopped = alice.delete(server("alice")).bearer_auth(ALICE_TOKEN).send().await.expect("stop answers");
    assert!(stopped.status().is_success(), "{}", stopped.status());
    let stops = futures::future::join_all(users.iter().map(|u| hub.delete(server(u)).bearer_auth(HUB_TOKEN).send())).await;
    assert!(stops.iter().all(|r| r.as_ref().is_ok_and(|r| r.status().is_success())), "every hostile spawn stops");
}
