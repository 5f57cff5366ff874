//! Choosing a cluster for a new server among a profile's contexts. Pure: the caller supplies
//! which clusters are healthy and how loaded they are.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// How a server is placed among a profile's contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The first healthy context, in list order.
    FirstHealthy,
    /// The healthy context running the fewest servers.
    LeastLoaded,
    /// A healthy context drawn at random, by weight (every context has one).
    Weighted(BTreeMap<String, u32>),
}

/// The chosen context and why, in words recorded on the instance and in an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub context: String,
    pub reason: String,
}

/// No candidate context is healthy; each with its cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no healthy cluster for this profile: {}", .unhealthy.iter().map(|(c, why)| format!("{c} ({why})")).collect::<Vec<_>>().join(", "))]
pub struct NoHealthyCluster {
    pub unhealthy: Vec<(String, String)>,
}

/// Picks a context. `health(ctx)` is `Ok(())` for a healthy cluster, else the cause; `load` is
/// the number of instances per context; `seed` makes weighted draws stable per instance.
pub fn choose(
    contexts: &[String],
    placement: &Placement,
    health: impl Fn(&str) -> Result<(), String>,
    load: &BTreeMap<String, usize>,
    seed: &str,
) -> Result<Placed, NoHealthyCluster> {
    let mut unhealthy = Vec::new();
    let mut healthy = Vec::new();
    for c in contexts {
        match health(c) {
            Ok(()) => healthy.push(c.as_str()),
            Err(why) => unhealthy.push((c.clone(), why)),
        }
    }
    let skipped = if unhealthy.is_empty() {
        String::new()
    } else {
        format!("; skipped unhealthy {}", unhealthy.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", "))
    };
    let single = contexts.len() == 1;
    let pick = |context: &str, why: String| Placed { context: context.to_string(), reason: format!("{why}{skipped}") };
    let Some(&first) = healthy.first() else { return Err(NoHealthyCluster { unhealthy }) };
    if single {
        return Ok(pick(first, "the profile's only cluster".into()));
    }
    Ok(match placement {
        Placement::FirstHealthy => pick(first, "first healthy cluster in the profile's list".into()),
        Placement::LeastLoaded => {
            let count = |c: &str| load.get(c).copied().unwrap_or(0);
            // min_by_key keeps the first of equals: ties go to list order.
            let best = healthy.iter().copied().min_by_key(|c| count(c)).unwrap_or(first);
            pick(best, format!("least loaded: {} servers", count(best)))
        }
        Placement::Weighted(weights) => {
            let weight = |c: &str| u64::from(weights.get(c).copied().unwrap_or(0));
            let total: u64 = healthy.iter().map(|c| weight(c)).sum();
            if total == 0 {
                return Ok(pick(first, "weighted, but every healthy cluster has weight 0: first healthy".into()));
            }
            let mut ticket = draw(seed) % total;
            let mut chosen = first;
            for c in &healthy {
                if ticket < weight(c) {
                    chosen = c;
                    break;
                }
                ticket -= weight(c);
            }
            pick(chosen, format!("weighted draw: weight {} of {total}", weight(chosen)))
        }
    })
}

/// A number drawn from the seed that every Rust release and every replica computes alike
/// (the first 8 bytes of its SHA-256), so a key's weighted draw never moves.
fn draw(seed: &str) -> u64 {
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctxs() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn down(bad: &'static [&'static str]) -> impl Fn(&str) -> Result<(), String> {
        move |c| if bad.contains(&c) { Err("connection refused".into()) } else { Ok(()) }
    }

    #[test]
    fn first_healthy_skips_the_unhealthy_and_says_so() {
        let got = choose(&ctxs(), &Placement::FirstHealthy, down(&["a"]), &BTreeMap::new(), "k").expect("choice");
        assert_eq!(got.context, "b");
        assert!(got.reason.contains("skipped unhealthy a"), "{}", got.reason);
    }

    #[test]
    fn least_loaded_picks_the_emptiest_healthy_cluster() {
        let load = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 5), ("c".to_string(), 0)]);
        assert_eq!(choose(&ctxs(), &Placement::LeastLoaded, down(&[]), &load, "k").expect("choice").context, "c");
        assert_eq!(choose(&ctxs(), &Placement::LeastLoaded, down(&["c"]), &load, "k").expect("choice").context, "a");
    }

    #[test]
    fn weighted_draws_follow_weights_and_are_stable_per_seed() {
        let w = Placement::Weighted(BTreeMap::from([("a".to_string(), 0), ("b".to_string(), 3), ("c".to_string(), 1)]));
        let mut counts = BTreeMap::new();
        for i in 0..4000 {
            let c = choose(&ctxs(), &w, down(&[]), &BTreeMap::new(), &format!("user{i}")).expect("choice").context;
            *counts.entry(c).or_insert(0) += 1;
        }
        assert_eq!(counts.get("a"), None);
        let (b, c) = (counts["b"], counts["c"]);
        assert!(b > 2 * c && c > 500, "b={b} c={c}");
        // The draw is fixed by the seed's SHA-256: the same on every Rust release and replica.
        assert_eq!(draw("same"), 0x0967_115f_2813_a354);
        let once = choose(&ctxs(), &w, down(&[]), &BTreeMap::new(), "same").expect("choice");
        assert_eq!(once, choose(&ctxs(), &w, down(&[]), &BTreeMap::new(), "same").expect("choice"));
    }

    #[test]
    fn no_healthy_cluster_names_each_cause() {
        let err = choose(&ctxs(), &Placement::FirstHealthy, down(&["a", "b", "c"]), &BTreeMap::new(), "k").expect_err("none");
        assert_eq!(err.unhealthy.len(), 3);
        assert!(err.to_string().contains("b (connection refused)"), "{err}");
    }
}
