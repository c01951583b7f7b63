//! Queue calls a running job cannot go on without, carried through a Redis outage.
//!
//! A job claimed before Redis restarts (or stalls) reads from it again before its first step:
//! the repository's secrets, the previous job of its branch, its concurrency group, the jobs it
//! queues. Failing the job when such a read meets no Redis would turn a restart that loses
//! nothing into failed builds; the job instead waits where it is and goes on when Redis
//! answers, as its heartbeats do. An outage longer than `stale_after` ends the same way as
//! for any silent agent: once Redis is back the reaper requeues the job, the next heartbeat
//! says the claim is lost, and that stops the wait here.

use std::future::Future;
use std::time::{Duration, Instant};

use raibid_queue::QueueError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The first pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// `call` until it answers, or fails otherwise than with Redis away ([`QueueError::is_transient`]),
/// or `stop` is cancelled (the job was cancelled, its claim lost, the agent is shutting down):
/// then the last error. `what` names the call in the agent's log.
pub(super) async fn through_outage<T, F, Fut>(
    job: &str,
    what: &str,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut pause = FIRST_PAUSE;
    let mut away_since = None;
    loop {
        match call().await {
            Err(e) if e.is_transient() && !stop.is_cancelled() => {
                if away_since.is_none() {
                    warn!(job, error = %e, "{what}: redis is away; the job waits for it");
                    away_since = Some(Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return Err(e),
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
            answered => {
                if let Some(since) = away_since {
                    info!(job, waited = ?since.elapsed(), "{what}: redis answers again; the job goes on");
                }
                return answered;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counted<T: Clone + 'static>(
        calls: &AtomicU32,
        answers: Vec<Result<T, QueueError>>,
    ) -> impl FnMut() -> std::future::Ready<Result<T, QueueError>> + '_ {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            std::future::ready(match &answers[n.min(answers.len() - 1)] {
                Ok(v) => Ok(v.clone()),
                Err(QueueError::Unavailable(m)) => Err(QueueError::Unavailable(m.clone())),
                Err(QueueError::Timeout(ms)) => Err(QueueError::Timeout(*ms)),
                Err(QueueError::NotFound(id)) => Err(QueueError::NotFound(id.clone())),
                Err(other) => panic!("not used here: {other}"),
            })
        }
    }

    #[tokio::test]
    async fn redis_away_is_waited_out() {
        let calls = AtomicU32::new(0);
        let answers = vec![
            Err(QueueError::Unavailable("refused".into())),
            Err(QueueError::Timeout(1_000)),
            Err(QueueError::Unavailable("refused".into())),
            Ok(7),
        ];
        let stop = CancellationToken::new();
        let got = through_outage("j", "reading", &stop, counted(&calls, answers)).await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn other_errors_end_it_at_once() {
        let calls = AtomicU32::new(0);
        let answers: Vec<Result<u8, _>> = vec![Err(QueueError::NotFound("x".into()))];
        let stop = CancellationToken::new();
        let got = through_outage("j", "reading", &stop, counted(&calls, answers)).await;
        assert!(matches!(got, Err(QueueError::NotFound(_))), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stopped_job_stops_waiting() {
        let calls = AtomicU32::new(0);
        let answers: Vec<Result<u8, _>> = vec![Err(QueueError::Unavailable("refused".into()))];
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                stop.cancel();
            })
        };
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            through_outage("j", "reading", &stop, counted(&calls, answers)),
        )
        .await
        .expect("the wait ends with the job");
        assert!(matches!(got, Err(QueueError::Unavailable(_))), "{got:?}");
        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "tried again before the stop"
        );
        stopper.await.unwrap();

        // A job stopped already is not kept waiting at all.
        let calls = AtomicU32::new(0);
        let answers: Vec<Result<u8, _>> = vec![Err(QueueError::Timeout(1_000)), Ok(1)];
        let got = through_outage("j", "reading", &stop, counted(&calls, answers)).await;
        assert!(matches!(got, Err(QueueError::Timeout(_))), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
