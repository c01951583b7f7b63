//! A client that keeps asking the API the questions a dashboard asks, and remembers how long
//! every answer took: "the API stays responsive" as a number.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::jobs::quantile;

/// Answers seen by a [`LatencyProbe`].
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Milliseconds of each answered request, in order.
    pub millis: Vec<u64>,
    /// HTTP status of each answered request.
    pub statuses: Vec<u16>,
    /// Requests that got no answer at all (connection refused, client timeout).
    pub failures: u32,
}

impl Latencies {
    pub fn quantile(&self, q: f64) -> u64 {
        let mut sorted = self.millis.clone();
        sorted.sort_unstable();
        quantile(&sorted, q)
    }

    pub fn max(&self) -> u64 {
        self.millis.iter().copied().max().unwrap_or(0)
    }

    /// Answers with a 5xx status other than 503 (which is the designed answer to an outage).
    pub fn server_errors(&self) -> usize {
        self.statuses
            .iter()
            .filter(|&&s| s >= 500 && s != 503)
            .count()
    }

    pub fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|&&s| s == status).count()
    }
}

pub struct LatencyProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Latencies>,
}

impl LatencyProbe {
    /// GETs each of `paths` under `base` in turn, one request every `every`, until stopped.
    pub fn start(base: &str, paths: &[&str], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Latencies::default();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for url in urls.iter().cycle() {
                    tick.tick().await;
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    match http.get(url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            seen.millis.push(started.elapsed().as_millis() as u64);
                            seen.statuses.push(status);
                        }
                        Err(_) => seen.failures += 1,
                    }
                }
                seen
            })
        };
        Self { stop, task }
    }

    pub async fn stop(self) -> Latencies {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the probe task did not panic")
    }
}
