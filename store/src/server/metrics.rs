//! Prometheus metrics (`GET /metrics`, OpenMetrics text from `prometheus-client`).
//!
//! Request counts and latencies by route and status, requests in flight,
//! commits and merges by namespace, hook runs and failures, auth failures,
//! and, refreshed at scrape time (at most every few seconds), the store's
//! size, object count, SQLite page-cache hit ratio and the time of the last
//! successful backup (from the audit log, so backup freshness can be alerted on).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::{self, Outcome};
use crate::error::Result;
use crate::hooks::HookRun;
use crate::store::Store;

/// Content type of `/metrics` for clients that ask for OpenMetrics (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of `/metrics` otherwise: the Prometheus text format (`promtool check metrics` reads it).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Store statistics are recomputed at most this often.
const STATS_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsLabels {
    pub ns: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

type LatencyFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<HttpLabels, Counter>,
    pub latency: LatencyFamily,
    pub in_flight: Gauge,
    pub commits: Family<NsLabels, Counter>,
    pub merges: Family<NsLabels, Counter>,
    pub hook_runs: Family<HookLabels, Counter>,
    pub hook_failures: Family<HookLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    store_size: Gauge,
    objects: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_ratio: Gauge<f64, AtomicU64>,
    last_backup: Gauge,
    stats_at: Mutex<Option<Instant>>,
}

/// Upper bounds (seconds) of the request latency histogram's buckets. They
/// include the thresholds SLOs are written against (100 ms reads, 250 ms
/// commits, 1 s, ...), since a latency SLI can only count requests under a
/// bound the histogram has; `qg-slo validate` checks specs against this list.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            commits: Family::default(),
            merges: Family::default(),
            hook_runs: Family::default(),
            hook_failures: Family::default(),
            auth_failures: Family::default(),
            store_size: Gauge::default(),
            objects: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_ratio: Gauge::default(),
            last_backup: Gauge::default(),
            stats_at: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "qg_http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.requests.clone(),
        );
        registry.register(
            "qg_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code",
            m.latency.clone(),
        );
        registry.register(
            "qg_http_requests_in_flight",
            "HTTP requests being answered now",
            m.in_flight.clone(),
        );
        registry.register(
            "qg_commits",
            "Commits made through the API, by namespace",
            m.commits.clone(),
        );
        registry.register(
            "qg_merges",
            "Merges made through the API (fast-forwards included), by namespace",
            m.merges.clone(),
        );
        registry.register(
            "qg_hook_runs",
            "Hook executions, by hook",
            m.hook_runs.clone(),
        );
        registry.register(
            "qg_hook_failures",
            "Hook executions that failed or timed out (pre-* failures rejected the operation), by hook",
            m.hook_failures.clone(),
        );
        registry.register(
            "qg_auth_failures",
            "Requests refused for authentication or authorization, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "qg_store_size_bytes",
            "Size of the store's database files (qg.sqlite and its WAL)",
            m.store_size.clone(),
        );
        registry.register(
            "qg_store_objects",
            "Objects stored, all namespaces",
            m.objects.clone(),
        );
        registry.register(
            "qg_sqlite_cache_hits",
            "SQLite page cache hits of the server's connections",
            m.cache_hits.clone(),
        );
        registry.register(
            "qg_sqlite_cache_misses",
            "SQLite page cache misses of the server's connections",
            m.cache_misses.clone(),
        );
        registry.register(
            "qg_sqlite_cache_hit_ratio",
            "SQLite page cache hits / (hits + misses) since the server started",
            m.cache_ratio.clone(),
        );
        registry.register(
            "qg_backup_last_success_timestamp_seconds",
            "Unix time of the newest successful backup in the audit log (0: none yet)",
            m.last_backup.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count a hook run (installed as the store's hook observer).
    pub fn observe_hook(&self, run: &HookRun) {
        let labels = HookLabels {
            hook: run.hook.file_name().to_string(),
        };
        self.hook_runs.get_or_create(&labels).inc();
        if !run.ok() {
            self.hook_failures.get_or_create(&labels).inc();
        }
    }

    /// Add a connection's page-cache counters (read with reset when it returns to the pool).
    pub fn add_cache_stats(&self, hits: u64, misses: u64) {
        self.cache_hits.inc_by(hits);
        self.cache_misses.inc_by(misses);
        let (h, m) = (self.cache_hits.get(), self.cache_misses.get());
        if h + m > 0 {
            self.cache_ratio.set(h as f64 / (h + m) as f64);
        }
    }

    /// Recompute the store gauges if they are older than a few seconds.
    pub fn refresh_store_stats(&self, store: &Store) -> Result<()> {
        {
            let mut at = self.stats_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < STATS_EVERY) {
                return Ok(());
            }
            *at = Some(Instant::now());
        }
        let db_path = store.db().path().to_path_buf();
        let mut bytes = 0u64;
        for suffix in ["", "-wal"] {
            let mut p = db_path.clone().into_os_string();
            p.push(suffix);
            bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        self.store_size.set(bytes as i64);
        self.objects.set(store.db().object_count()? as i64);
        let last = audit::last(store.db(), "backup.", Outcome::Success)?
            .and_then(|e| crate::clock::parse(&e.time))
            .map(|t| t.unix_timestamp())
            .unwrap_or(0);
        self.last_backup.set(last);
        Ok(())
    }

    /// The registry in the Prometheus text format (0.0.4): OpenMetrics without
    /// `# EOF` and `# UNIT`, counter families named with their `_total` suffix.
    pub fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode())
    }

    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Rewrite OpenMetrics text as Prometheus text format 0.0.4.
fn to_prometheus_text(open: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new();
        m.commits
            .get_or_create(&NsLabels {
                ns: "default".into(),
            })
            .inc();
        let text = m.encode_prometheus();
        assert!(text.contains("# TYPE qg_commits_total counter\n"), "{text}");
        assert!(text.contains("# HELP qg_commits_total Commits"), "{text}");
        assert!(
            text.contains("qg_commits_total{ns=\"default\"} 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE qg_store_size_bytes gauge"));
    }

    #[test]
    fn latency_buckets_are_the_slo_thresholds_spelled_as_exported() {
        let m = Metrics::new();
        m.latency
            .get_or_create(&HttpLabels {
                method: "GET".into(),
                route: "/v1/ns/:ns/query".into(),
                status: "200".into(),
            })
            .observe(0.07);
        let text = m.encode_prometheus();
        let les: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("qg_http_request_duration_seconds_bucket{"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        // qg-slo's specs name these exact strings (slo/latency.yaml)
        assert_eq!(
            les,
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"
            ]
        );
        assert!(
            text.contains("le=\"0.1\",method=\"GET\",route=\"/v1/ns/:ns/query\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "le=\"0.05\",method=\"GET\",route=\"/v1/ns/:ns/query\",status=\"200\"} 0"
            ),
            "{text}"
        );
    }
}
