//! The repositories that have jobs, the most recently active first: what the repositories
//! page and `GET /api/v1/repos` list. Each enqueue scores its repository in one sorted set;
//! pruning a repository's last job removes it. A Redis that held jobs before the set existed
//! has it filled once, from the per-repository indexes, the first time it is read.

use chrono::{DateTime, Utc};

use crate::{Queue, QueueError};

/// A repository with jobs, and when its newest job was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoActivity {
    pub repo: String,
    pub last_queued_at: DateTime<Utc>,
}

/// Repositories read per round trip while filling the set.
const BATCH: usize = 1000;

impl Queue {
    /// Every repository with a job kept, the one whose newest job was queued last first.
    pub async fn repositories(&self) -> Result<Vec<RepoActivity>, QueueError> {
        let read = || {
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS")
                .arg(self.keys.repos_indexed())
                .cmd("ZRANGE")
                .arg(self.keys.repos())
                .arg(0)
                .arg(-1)
                .arg("REV")
                .arg("WITHSCORES");
            pipe
        };
        let (indexed, mut entries): (bool, Vec<(String, f64)>) = self.conn.pipe(&read()).await?;
        if !indexed {
            self.index_repositories().await?;
            (_, entries) = self.conn.pipe::<(bool, _)>(&read()).await?;
        }
        Ok(entries
            .into_iter()
            .map(|(repo, score)| RepoActivity {
                repo,
                // Milliseconds since 1970 are exact in an f64 for the next 280,000 years.
                last_queued_at: DateTime::from_timestamp_millis(score as i64).unwrap_or_default(),
            })
            .collect())
    }

    /// Fills the set from the `by_repo` indexes (jobs queued before it existed): each scored
    /// by its newest job's `created_at`. Idempotent, so two servers doing it at once, or an
    /// enqueue meanwhile, change nothing.
    async fn index_repositories(&self) -> Result<(), QueueError> {
        let repos = self
            .conn
            .scan_prefixed(&self.keys.by_repo(""), "zset")
            .await?;
        for batch in repos.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for repo in batch {
                pipe.cmd("ZRANGE")
                    .arg(self.keys.by_repo(repo))
                    .arg("+")
                    .arg("-")
                    .arg("BYLEX")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1);
            }
            let newest: Vec<Vec<String>> = self.conn.pipe(&pipe).await?;
            let newest: Vec<(&String, String)> = batch
                .iter()
                .zip(newest)
                .filter_map(|(repo, ids)| Some((repo, ids.into_iter().next()?)))
                .collect();
            if newest.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (_, id) in &newest {
                pipe.cmd("HGET").arg(self.keys.job(id)).arg("created_at");
            }
            let created: Vec<Option<i64>> = self.conn.pipe(&pipe).await?;
            let mut add = redis::pipe();
            for ((repo, id), created) in newest.iter().zip(created) {
                // A record without its time: the job id's, a moment before it.
                let ms = created.or_else(|| {
                    let ulid = ulid::Ulid::from_string(id).ok()?;
                    i64::try_from(ulid.timestamp_ms()).ok()
                });
                if let Some(ms) = ms {
                    add.cmd("ZADD")
                        .arg(self.keys.repos())
                        .arg("GT")
                        .arg(ms)
                        .arg(*repo)
                        .ignore();
                }
            }
            if !add.is_empty() {
                let () = self.conn.pipe(&add).await?;
            }
        }
        self.conn
            .run(redis::cmd("SET").arg(self.keys.repos_indexed()).arg(1))
            .await
    }
}
