//! The server's Prometheus metrics.
//!
//! Label values come from small fixed sets (forges, statuses, error codes) or from pool names,
//! which the configuration bounds; nothing a client sends becomes a label value as such, so a
//! flood of odd requests cannot blow up the number of series.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raibid_model::{JobStatus, PoolName};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct WebhookLabels {
    pub forge: &'static str,
    pub event: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    pool: String,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    outcome: &'static str,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// Not one of `server.tokens`.
    Refused,
    /// Not compared: its client had failed too often (`server.auth_failures_max`).
    LockedOut,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReportLabels {
    forge: &'static str,
    outcome: &'static str,
}

/// How a commit-status report ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportOutcome {
    Success,
    /// Refused for good (a 4xx other than 408 and 429, a redirect), or still failing after
    /// an hour of retries.
    Failure,
    /// Failed in a way that may pass (the forge is unreachable, answers 5xx, 408 or 429): the
    /// report is tried again later.
    Retry,
    /// No token or API URL configured for the forge, or nothing new to send: the job's
    /// current status was already sent (the event was older than the job).
    Skipped,
}

impl ReportOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Success => "success",
            ReportOutcome::Failure => "failure",
            ReportOutcome::Retry => "retry",
            ReportOutcome::Skipped => "skipped",
        }
    }
}

/// Job durations run from seconds (a lint) to hours (a model build).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub(crate) struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    jobs_queued: Family<PoolLabels, Counter>,
    transitions: Family<StatusLabels, Counter>,
    durations: Family<StatusLabels, Histogram, fn() -> Histogram>,
    queue_lag: Family<PoolLabels, Gauge>,
    queue_pending: Family<PoolLabels, Gauge>,
    queue_paused: Family<PoolLabels, Gauge>,
    queue_oldest: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    dead_letters: Family<PoolLabels, Gauge>,
    redis_up: Gauge,
    agents: Gauge,
    scaler_agents: Family<PoolLabels, Gauge>,
    scaler_starting: Family<PoolLabels, Gauge>,
    scaler_max: Family<PoolLabels, Gauge>,
    status_reports: Family<ReportLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("raibid");
        let webhooks = Family::default();
        registry.register(
            "webhooks_received",
            "Webhooks received, by forge, event and outcome",
            webhooks.clone(),
        );
        let jobs_queued = Family::default();
        registry.register(
            "jobs_queued",
            "Jobs created by this server (webhooks, API submissions, retries), by pool",
            jobs_queued.clone(),
        );
        let transitions = Family::default();
        registry.register(
            "job_status_transitions",
            "Job status changes seen on the events stream, by pool and new status",
            transitions.clone(),
        );
        let durations = Family::<StatusLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "job_duration_seconds",
            "Time from a job's start to its final status, by pool and final status",
            durations.clone(),
        );
        let queue_lag = Family::default();
        registry.register(
            "queue_lag",
            "Jobs waiting to be delivered to an agent, by pool (sampled)",
            queue_lag.clone(),
        );
        let queue_pending = Family::default();
        registry.register(
            "queue_pending",
            "Jobs delivered to an agent and not yet finished, by pool (sampled)",
            queue_pending.clone(),
        );
        let queue_paused = Family::default();
        registry.register(
            "queue_paused",
            "1 while the pool is paused (`raibid pool pause`): its jobs wait whatever the lag \
             (sampled)",
            queue_paused.clone(),
        );
        let queue_oldest = Family::default();
        registry.register(
            "queue_oldest_queued_seconds",
            "Age of the pool's oldest job waiting to be delivered to an agent; 0 when none waits \
             (sampled)",
            queue_oldest.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "queue_dead_letters",
            "Entries in the pool's dead-letter stream: jobs given up after max_attempts \
             (sampled)",
            dead_letters.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 if the server's last sample of the queue reached Redis, else 0",
            redis_up.clone(),
        );
        let agents = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents whose last heartbeat is recent (sampled)",
            agents.clone(),
        );
        let scaler_agents = Family::default();
        registry.register(
            "scaler_agents",
            "Agents the autoscaler (raibid up's local pool) keeps for a pool, as it last reported",
            scaler_agents.clone(),
        );
        let scaler_starting = Family::default();
        registry.register(
            "scaler_agents_starting",
            "Of those, agents that have not taken a job yet",
            scaler_starting.clone(),
        );
        let scaler_max = Family::default();
        registry.register(
            "scaler_max_agents",
            "The autoscaler's upper bound on agents for a pool",
            scaler_max.clone(),
        );
        let status_reports = Family::default();
        registry.register(
            "status_reports",
            "Commit statuses sent to forges, by forge and outcome",
            status_reports.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "auth_failures",
            "Presented API and sign-in tokens refused: not one of server.tokens (refused), or \
             not compared because the client failed too often (locked_out)",
            auth_failures.clone(),
        );
        Self {
            registry,
            webhooks,
            jobs_queued,
            transitions,
            durations,
            queue_lag,
            queue_pending,
            queue_paused,
            queue_oldest,
            dead_letters,
            redis_up,
            agents,
            scaler_agents,
            scaler_starting,
            scaler_max,
            status_reports,
            auth_failures,
        }
    }

    pub fn auth_failure(&self, outcome: AuthOutcome) {
        let outcome = match outcome {
            AuthOutcome::Refused => "refused",
            AuthOutcome::LockedOut => "locked_out",
        };
        self.auth_failures
            .get_or_create(&AuthLabels { outcome })
            .inc();
    }

    pub fn webhook(&self, labels: WebhookLabels) {
        self.webhooks.get_or_create(&labels).inc();
    }

    pub fn job_queued(&self, pool: &PoolName) {
        self.jobs_queued
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .inc();
    }

    pub fn transition(&self, pool: &PoolName, status: JobStatus) {
        self.transitions
            .get_or_create(&StatusLabels {
                pool: pool.to_string(),
                status: status.as_str(),
            })
            .inc();
    }

    pub fn job_finished(&self, pool: &PoolName, status: JobStatus, seconds: f64) {
        self.durations
            .get_or_create(&StatusLabels {
                pool: pool.to_string(),
                status: status.as_str(),
            })
            .observe(seconds);
    }

    pub fn pool_sample(&self, stats: &raibid_model::PoolStats) {
        let labels = PoolLabels {
            pool: stats.pool.to_string(),
        };
        self.queue_lag
            .get_or_create(&labels)
            .set(saturate(stats.lag));
        self.queue_pending
            .get_or_create(&labels)
            .set(saturate(stats.pending));
        self.queue_paused
            .get_or_create(&labels)
            .set(i64::from(stats.paused.is_some()));
        self.queue_oldest
            .get_or_create(&labels)
            .set(stats.oldest_queued_ms.unwrap_or(0) as f64 / 1000.0);
        self.dead_letters
            .get_or_create(&labels)
            .set(saturate(stats.dead_letters));
    }

    /// Whether the sampler's last round reached Redis.
    pub fn redis_sample(&self, reached: bool) {
        self.redis_up.set(i64::from(reached));
    }

    pub fn scaler_sample(&self, status: &raibid_model::ScalerStatus) {
        let labels = PoolLabels {
            pool: status.pool.to_string(),
        };
        self.scaler_agents
            .get_or_create(&labels)
            .set(saturate(status.agents));
        self.scaler_starting
            .get_or_create(&labels)
            .set(saturate(status.starting));
        self.scaler_max
            .get_or_create(&labels)
            .set(saturate(status.max_agents));
    }

    pub fn agents_sample(&self, connected: usize) {
        self.agents
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
    }

    pub fn status_report(&self, forge: raibid_model::Forge, outcome: ReportOutcome) {
        self.status_reports
            .get_or_create(&ReportLabels {
                forge: forge.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use raibid_model::Forge;

    use super::*;

    /// Every family, with a sample each.
    fn populated() -> Metrics {
        let m = Metrics::new();
        let pool = PoolName::default();
        m.webhook(WebhookLabels {
            forge: "gitea",
            event: "push",
            outcome: "queued",
        });
        m.job_queued(&pool);
        m.transition(&pool, JobStatus::Running);
        m.job_finished(&pool, JobStatus::Success, 12.0);
        m.pool_sample(&raibid_model::PoolStats {
            pool: pool.clone(),
            stream: "ci-jobs:default".into(),
            length: 4,
            lag: 3,
            pending: 1,
            consumers: Vec::new(),
            oldest_queued_ms: Some(1_500),
            dead_letters: 2,
            paused: Some(raibid_model::PoolPause {
                by: "ops".into(),
                reason: String::new(),
                since: chrono::Utc::now(),
            }),
        });
        m.scaler_sample(&raibid_model::ScalerStatus {
            pool,
            source: "local".into(),
            agents: 1,
            starting: 0,
            started: 0,
            max_agents: 2,
            lag: 3,
            updated_at: chrono::Utc::now(),
            held: None,
        });
        m.agents_sample(2);
        m.redis_sample(true);
        m.status_report(Forge::Github, ReportOutcome::Failure);
        m.auth_failure(AuthOutcome::LockedOut);
        m
    }

    /// A rule of monitoring/alerts.yaml or a panel of its Grafana dashboard on a metric the
    /// server does not serve (renamed, say) would never fire or show anything: every
    /// `raibid_*` name in those files is a metric here.
    #[test]
    fn monitoring_names_only_served_metrics() {
        let text = populated().encode();
        let served: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for file in ["alerts.yaml", "grafana-dashboard.json"] {
            let path = format!("{}/../../monitoring/{file}", env!("CARGO_MANIFEST_DIR"));
            let rules = std::fs::read_to_string(path).unwrap();
            let mut used: Vec<&str> = rules
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|token| token.starts_with("raibid_"))
                .collect();
            used.sort();
            used.dedup();
            assert!(used.len() >= 8, "{file}: {used:?}");
            for name in used {
                assert!(
                    served.contains(&name),
                    "{file}: {name} is not served:\n{text}"
                );
            }
        }
    }

    #[test]
    fn every_family_is_exposed_with_its_labels() {
        let text = populated().encode();
        for expected in [
            r#"raibid_webhooks_received_total{forge="gitea",event="push",outcome="queued"} 1"#,
            r#"raibid_jobs_queued_total{pool="default"} 1"#,
            r#"raibid_job_status_transitions_total{pool="default",status="running"} 1"#,
            r#"raibid_job_duration_seconds_count{pool="default",status="success"} 1"#,
            r#"raibid_queue_lag{pool="default"} 3"#,
            r#"raibid_queue_pending{pool="default"} 1"#,
            r#"raibid_queue_paused{pool="default"} 1"#,
            r#"raibid_queue_oldest_queued_seconds{pool="default"} 1.5"#,
            r#"raibid_queue_dead_letters{pool="default"} 2"#,
            "raibid_redis_up 1",
            "raibid_agents_connected 2",
            r#"raibid_scaler_agents{pool="default"} 1"#,
            r#"raibid_scaler_max_agents{pool="default"} 2"#,
            r#"raibid_status_reports_total{forge="github",outcome="failure"} 1"#,
            r#"raibid_auth_failures_total{outcome="locked_out"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
