//! Reads the Kubernetes cluster for the Cluster tab, through the same code as `raibid status`
//! (`raibid_infra::cluster`).
//!
//! It reads only while the tab is shown: a cluster read is half a dozen list calls, which is
//! nothing for one look but a steady load on the API server (and on this process's CPU) for a
//! dashboard left open on another tab all day. Every round connects afresh, so a kubeconfig
//! that changes (a new k3s install, a rotated token) is picked up and a cluster that went away
//! shows as unreachable instead of as a page of list errors.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use raibid_infra::cluster::{cluster_status_of, connect_to};
use tokio::sync::{mpsc, watch};

use crate::data::{ClusterUpdate, DataEvent};
use crate::event::Message;
use raibid_client::Backoff;

use crate::poller::MAX_BACKOFF;

/// How often the shown cluster is re-read: nodes and pods change at human speed, and KEDA
/// itself looks at its triggers every 10 s (`pollingInterval`).
pub(crate) const CLUSTER_REFRESH: Duration = Duration::from_secs(5);
/// The longest a connection attempt or one read may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct ClusterPoller {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub events: mpsc::UnboundedSender<Message>,
    /// True while the Cluster tab is on screen.
    pub visible: watch::Receiver<bool>,
    pub refresh: Duration,
}

impl ClusterPoller {
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
        loop {
            if self.visible.wait_for(|shown| *shown).await.is_err() {
                return;
            }
            let (update, pause) = match connect_to(&self.kubeconfig, TIMEOUT).await {
                Ok(cluster) => {
                    backoff.reset();
                    let status = cluster_status_of(&cluster, &self.namespace).await;
                    let update = ClusterUpdate::Status {
                        status: Box::new(status),
                        at: Utc::now(),
                    };
                    (update, self.refresh)
                }
                Err(error) => {
                    let wait = backoff.next_wait();
                    let update = ClusterUpdate::Unreachable {
                        error: error.to_string(),
                        retry_at: Utc::now() + wait,
                    };
                    (update, wait)
                }
            };
            if self
                .events
                .send(Message::Data(DataEvent::Cluster(update)))
                .is_err()
            {
                return;
            }
            // The whole pause, shown or not: a tab left and found again reads at once only if
            // the pause is over, so flipping tabs cannot make it poll faster.
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raibid_testkit::FakeKubeApi;

    async fn next_update(inbox: &mut mpsc::UnboundedReceiver<Message>) -> ClusterUpdate {
        let message = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("an update within 20 s")
            .expect("poller alive");
        match message {
            Message::Data(DataEvent::Cluster(update)) => update,
            _ => panic!("not a cluster update"),
        }
    }

    /// Against the recorded k3s cluster: nothing is read while the tab is hidden; once shown,
    /// the reading carries nodes, agent pods and ScaledJobs; an API server that stops answering
    /// turns into "unreachable", and one that comes back into a reading again.
    #[tokio::test]
    async fn reads_the_cluster_only_while_shown_and_survives_an_outage() {
        let api = FakeKubeApi::start("k3s-arm64").await;
        let (events, mut inbox) = mpsc::unbounded_channel();
        let (visible, visible_rx) = watch::channel(false);
        let poller = tokio::spawn(
            ClusterPoller {
                kubeconfig: api.kubeconfig().to_path_buf(),
                namespace: "raibid-ci".into(),
                events,
                visible: visible_rx,
                refresh: Duration::from_millis(200),
            }
            .run(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(api.requests().is_empty(), "{:?}", api.requests());
        assert!(inbox.try_recv().is_err());

        visible.send_replace(true);
        let ClusterUpdate::Status { status, .. } = next_update(&mut inbox).await else {
            panic!("the recorded cluster answers");
        };
        assert!(status.reachable);
        assert_eq!(status.nodes[0].arch, "arm64");
        assert_eq!(status.scaled_jobs.len(), 2);
        assert!(
            status
                .components
                .iter()
                .any(|c| c.component == raibid_infra::Component::Agents && c.pods.len() == 4)
        );

        api.set_down(true);
        let update = loop {
            match next_update(&mut inbox).await {
                ClusterUpdate::Status { .. } => continue,
                unreachable => break unreachable,
            }
        };
        let ClusterUpdate::Unreachable { error, .. } = update else {
            unreachable!()
        };
        assert!(error.contains("no cluster reachable at"), "{error}");

        api.set_down(false);
        loop {
            if let ClusterUpdate::Status { status, .. } = next_update(&mut inbox).await {
                assert!(status.reachable);
                break;
            }
        }

        // Hidden again: after the round in flight, no more requests.
        visible.send_replace(false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = api.requests().len();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(api.requests().len(), before, "polled while hidden");
        poller.abort();
    }
}
