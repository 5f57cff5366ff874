//! Prometheus metrics, served as text at `/metrics`.
//!
//! [`Metrics`] is cheap to clone (every family shares its storage) and has one small method per
//! thing worth counting, so the spawner, the registry and the HTTP layer never touch
//! `prometheus-client` types themselves.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the spawn-duration buckets: image pulls make the tail long.
const SPAWN_BUCKETS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpawnLabels {
    profile: String,
    cluster: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    state: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CullLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn spawn_histogram() -> Histogram {
    Histogram::new(SPAWN_BUCKETS)
}

/// The daemon's metrics. Clone it freely; all clones update the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    spawn_duration: HistogramFamily<SpawnLabels>,
    spawns_in_flight: Gauge,
    instances: Family<InstanceLabels, Gauge>,
    kube_api_errors: Family<ClusterLabels, Counter>,
    watch_restarts: Family<ClusterLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    profile_reloads: Family<ReloadLabels, Counter>,
    culled: Family<CullLabels, Counter>,
    http_connections: Gauge,
    http_connections_refused: Counter,
    lease_held: Family<ClusterLabels, Gauge>,
}

/// An open HTTP connection, counted in `fleetspawn_http_connections` until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry (every name prefixed `fleetspawn_`) with all metrics registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fleetspawn");
        let spawn_duration: HistogramFamily<SpawnLabels> = Family::new_with_constructor(spawn_histogram);
        let spawns_in_flight = Gauge::default();
        let instances = Family::<InstanceLabels, Gauge>::default();
        let kube_api_errors = Family::<ClusterLabels, Counter>::default();
        let watch_restarts = Family::<ClusterLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let profile_reloads = Family::<ReloadLabels, Counter>::default();
        let culled = Family::<CullLabels, Counter>::default();
        let http_connections = Gauge::default();
        let http_connections_refused = Counter::default();
        let lease_held = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "spawn_duration_seconds",
            "Time from a spawn request to its server being ready (outcome=ok) or failed (outcome=error)",
            spawn_duration.clone(),
        );
        registry.register("spawns_in_flight", "Spawns started and not yet ready or failed", spawns_in_flight.clone());
        registry.register("instances", "Instances in the registry by state and cluster", instances.clone());
        registry.register("kube_api_errors", "Failed Kubernetes API calls by cluster", kube_api_errors.clone());
        registry.register("watch_restarts", "Restarts of Kubernetes watches by cluster", watch_restarts.clone());
        registry.register("http_requests", "HTTP requests served by route template and status", http_requests.clone());
        registry.register("profile_reloads", "Reloads of profiles.toml by outcome", profile_reloads.clone());
        registry.register("culled", "Servers stopped by the reconciler by reason (MaxAge, Idle)", culled.clone());
        registry.register("http_connections", "Open HTTP connections", http_connections.clone());
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because their client held max_connections_per_client",
            http_connections_refused.clone(),
        );
        for outcome in ["ok", "error"] {
            drop(profile_reloads.get_or_create(&ReloadLabels { outcome }));
        }
        registry.register("lease_held", "1 for each cluster whose Lease this replica holds (and so reconciles), else 0", lease_held.clone());
        Metrics {
            registry: Arc::new(registry),
            spawn_duration,
            spawns_in_flight,
            instances,
            kube_api_errors,
            watch_restarts,
            http_requests,
            profile_reloads,
            culled,
            http_connections,
            http_connections_refused,
            lease_held,
        }
    }

    /// Creates the series of a cluster at zero (API errors, watch restarts, its Lease not
    /// held), so that `rate()` and `increase()` see their first increment and dashboards show
    /// every cluster from the start.
    pub fn cluster_known(&self, cluster: &str) {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        drop(self.kube_api_errors.get_or_create(&labels));
        drop(self.watch_restarts.get_or_create(&labels));
        drop(self.lease_held.get_or_create(&labels));
    }

    /// Creates the series of a cull reason at zero (see [`Metrics::cluster_known`]).
    pub fn cull_reason_known(&self, reason: &str) {
        drop(self.culled.get_or_create(&CullLabels { reason: reason.to_string() }));
    }

    /// A connection was accepted; it counts as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.http_connections.inc();
        OpenConnection(self.http_connections.clone())
    }

    /// A connection was closed at once: its client holds too many.
    pub fn connection_refused(&self) {
        self.http_connections_refused.inc();
    }

    /// Records a finished spawn: how long it took and whether the server became ready.
    pub fn spawn_finished(&self, profile: &str, cluster: &str, seconds: f64, ok: bool) {
        let labels = SpawnLabels { profile: profile.to_string(), cluster: cluster.to_string(), outcome: if ok { "ok" } else { "error" } };
        self.spawn_duration.get_or_create(&labels).observe(seconds);
    }

    /// A spawn started.
    pub fn spawns_in_flight_inc(&self) {
        self.spawns_in_flight.inc();
    }

    /// A spawn reached ready or failed.
    pub fn spawns_in_flight_dec(&self) {
        self.spawns_in_flight.dec();
    }

    /// Sets how many instances of `cluster` are in `state` (e.g. `running`).
    pub fn set_instances(&self, state: &str, cluster: &str, n: usize) {
        let labels = InstanceLabels { state: state.to_string(), cluster: cluster.to_string() };
        self.instances.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A Kubernetes API call to `cluster` failed.
    pub fn kube_api_error(&self, cluster: &str) {
        self.kube_api_errors.get_or_create(&ClusterLabels { cluster: cluster.to_string() }).inc();
    }

    /// The reconciler stopped a server by itself (`MaxAge`, `Idle`).
    pub fn culled(&self, reason: &str) {
        self.culled.get_or_create(&CullLabels { reason: reason.to_string() }).inc();
    }

    /// A watch on `cluster` restarted (after an error or a desync).
    pub fn watch_restart(&self, cluster: &str) {
        self.watch_restarts.get_or_create(&ClusterLabels { cluster: cluster.to_string() }).inc();
    }

    /// An HTTP request to `route` (the route template, e.g. `/api/v1/users/{user}`) answered `status`.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests.get_or_create(&HttpLabels { route: route.to_string(), status }).inc();
    }

    /// This replica took (`true`) or lost `cluster`'s Lease.
    pub fn lease_held(&self, cluster: &str, held: bool) {
        self.lease_held.get_or_create(&ClusterLabels { cluster: cluster.to_string() }).set(i64::from(held));
    }

    /// profiles.toml was reloaded, successfully or not.
    pub fn profile_reload(&self, ok: bool) {
        self.profile_reloads.get_or_create(&ReloadLabels { outcome: if ok { "ok" } else { "error" } }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would only come from a bug in a
        // label encoder, and then a partial page is still the most useful answer.
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_labels() {
        let m = Metrics::new();
        m.spawn_finished("cpu", "east", 3.2, true);
        m.spawn_finished("cpu", "east", 700.0, false);
        m.spawns_in_flight_inc();
        m.spawns_in_flight_inc();
        m.spawns_in_flight_dec();
        m.set_instances("running", "east", 4);
        m.set_instances("running", "east", 3);
        m.kube_api_error("west");
        m.watch_restart("west");
        m.watch_restart("west");
        m.http_request("/api/v1/profiles", 200);
        m.profile_reload(false);
        m.lease_held("east", true);
        m.lease_held("west", true);
        m.lease_held("west", false);
        let text = m.encode();
        for line in [
            "# TYPE fleetspawn_spawn_duration_seconds histogram",
            r#"fleetspawn_spawn_duration_seconds_bucket{le="5.0",profile="cpu",cluster="east",outcome="ok"} 1"#,
            r#"fleetspawn_spawn_duration_seconds_count{profile="cpu",cluster="east",outcome="error"} 1"#,
            "fleetspawn_spawns_in_flight 1",
            r#"fleetspawn_instances{state="running",cluster="east"} 3"#,
            r#"fleetspawn_kube_api_errors_total{cluster="west"} 1"#,
            r#"fleetspawn_watch_restarts_total{cluster="west"} 2"#,
            r#"fleetspawn_http_requests_total{route="/api/v1/profiles",status="200"} 1"#,
            r#"fleetspawn_profile_reloads_total{outcome="error"} 1"#,
            r#"fleetspawn_lease_held{cluster="east"} 1"#,
            r#"fleetspawn_lease_held{cluster="west"} 0"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn known_clusters_reasons_and_reload_outcomes_start_at_zero() {
        let m = Metrics::new();
        m.cluster_known("east");
        m.cull_reason_known("Idle");
        let text = m.encode();
        for line in [
            r#"fleetspawn_kube_api_errors_total{cluster="east"} 0"#,
            r#"fleetspawn_watch_restarts_total{cluster="east"} 0"#,
            r#"fleetspawn_lease_held{cluster="east"} 0"#,
            r#"fleetspawn_culled_total{reason="Idle"} 0"#,
            r#"fleetspawn_profile_reloads_total{outcome="ok"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn clones_share_series() {
        let m = Metrics::new();
        m.clone().kube_api_error("east");
        assert!(m.encode().contains(r#"fleetspawn_kube_api_errors_total{cluster="east"} 1"#));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.kube_api_error("we\"ird\ncluster");
        let text = m.encode();
        assert!(text.contains(r#"cluster="we\"ird\ncluster""#), "{text}");
    }
}
