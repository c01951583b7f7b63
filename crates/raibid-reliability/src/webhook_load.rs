//! A forge that keeps pushing: a new signed push webhook at a steady rate, each redelivered
//! with the same delivery id until the server accepts it, as Gitea and GitHub do with failed
//! deliveries. Every answer is recorded, so a test can check that each accepted delivery became
//! exactly one job and see what the server answered while it was in trouble.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, JoinSet};

use crate::jobs::push_webhook;
use crate::stack::SECRET;

/// One answer to one attempt at delivering a webhook.
#[derive(Debug, Clone)]
pub struct Answer {
    pub delivery: String,
    pub sent: Instant,
    pub answered: Instant,
    /// 0: no HTTP answer at all (connection refused or reset).
    pub status: u16,
    pub retry_after: bool,
    pub job: Option<String>,
}

impl Answer {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What to push, and where.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server base URL.
    pub base: String,
    pub repo: String,
    pub clone_url: String,
    pub sha: String,
}

pub struct WebhookLoad {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    task: JoinHandle<()>,
}

impl WebhookLoad {
    /// Starts a new delivery every `every`; failed attempts are retried every 500 ms.
    pub fn start(target: Target, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        let task = {
            let (stop, answers) = (stop.clone(), answers.clone());
            tokio::spawn(async move {
                let mut deliveries = JoinSet::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let delivery = format!("load-{n}");
                    deliveries.spawn(redeliver(
                        http.clone(),
                        target.clone(),
                        delivery,
                        answers.clone(),
                    ));
                    tokio::time::sleep(every).await;
                }
                while let Some(done) = deliveries.join_next().await {
                    done.expect("a delivery task panicked");
                }
            })
        };
        Self {
            stop,
            answers,
            task,
        }
    }

    /// Starts no new deliveries; those under way are still redelivered until accepted.
    pub fn stop_new(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops starting new deliveries and waits until every started one has been accepted.
    pub async fn finish(self, within: Duration) -> Vec<Answer> {
        self.stop_new();
        tokio::time::timeout(within, self.task)
            .await
            .expect("every delivery was accepted in the end")
            .expect("the load task did not panic");
        self.answers.lock().expect("lock").clone()
    }
}

async fn redeliver(
    http: reqwest::Client,
    target: Target,
    delivery: String,
    answers: Arc<Mutex<Vec<Answer>>>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = deliver(&http, &target, &delivery).await;
        let accepted = answer.accepted();
        answers.lock().expect("lock").push(answer);
        if accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{delivery} was never accepted within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn deliver(http: &reqwest::Client, target: &Target, delivery: &str) -> Answer {
    let (headers, body) = push_webhook(
        SECRET,
        &target.repo,
        &target.clone_url,
        "refs/heads/main",
        &target.sha,
        delivery,
    );
    let mut request = http
        .post(format!("{}/webhooks/gitea", target.base))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let sent = Instant::now();
    let (status, retry_after, job) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (
                status,
                retry_after,
                body["job_id"].as_str().map(str::to_owned),
            )
        }
        Err(_) => (0, false, None),
    };
    Answer {
        delivery: delivery.to_owned(),
        sent,
        answered: Instant::now(),
        status,
        retry_after,
        job,
    }
}
