//! The pg_locks sampler: every 10 ms, on the real Postgres, counts holders and waiters of
//! NOTIFY's commit lock (object 0 of class 1262, pg_database), which serializes every
//! notifying commit in the cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Config;

use crate::common::{Record, Res};
use crate::conn;

const SAMPLE_SQL: &str =
    "select count(*) filter (where granted), count(*) filter (where not granted) \
     from pg_locks where locktype = 'object' and classid = 1262 and objid = 0";

/// Live counters of a running sampler.
#[derive(Debug, Default)]
pub struct LockStats {
    /// Samples taken.
    pub samples: AtomicU64,
    /// Samples with at least one waiter.
    pub samples_waiting: AtomicU64,
    /// Most waiters seen in one sample.
    pub max_waiting: AtomicU64,
    /// Most holders seen in one sample.
    pub max_granted: AtomicU64,
    /// Failed samples.
    pub errors: AtomicU64,
}

impl LockStats {
    /// Copies the totals into a result.
    pub fn fill(&self, r: &mut Record) {
        r.lock_samples = Some(self.samples.load(Ordering::Relaxed));
        r.lock_samples_waiting = Some(self.samples_waiting.load(Ordering::Relaxed));
        r.lock_max_waiting = Some(self.max_waiting.load(Ordering::Relaxed));
        let errors = self.errors.load(Ordering::Relaxed);
        if errors > 0 {
            r.add_note(format!("{errors} pg_locks samples failed"));
        }
    }
}

/// A sampler task; stop it with [`Sampler::finish`].
pub struct Sampler {
    /// Its counters, readable while it runs.
    pub stats: Arc<LockStats>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Connects to `direct` and starts sampling every 10 ms.
    pub async fn start(direct: &Config) -> Res<Sampler> {
        let client = conn::connect(direct).await?;
        let stmt = client.prepare(SAMPLE_SQL).await.map_err(|e| {
            format!(
                "preparing the pg_locks sample: {}",
                crate::conn::describe(&e)
            )
        })?;
        let stats = Arc::new(LockStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !sp.load(Ordering::Relaxed) {
                tick.tick().await;
                match tokio::time::timeout(Duration::from_secs(5), client.query_one(&stmt, &[]))
                    .await
                {
                    Ok(Ok(row)) => {
                        let granted: i64 = row.get(0);
                        let waiting: i64 = row.get(1);
                        st.samples.fetch_add(1, Ordering::Relaxed);
                        if waiting > 0 {
                            st.samples_waiting.fetch_add(1, Ordering::Relaxed);
                        }
                        st.max_waiting.fetch_max(waiting as u64, Ordering::Relaxed);
                        st.max_granted.fetch_max(granted as u64, Ordering::Relaxed);
                    }
                    _ => {
                        st.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Sampler { stats, stop, task })
    }

    /// Stops sampling and returns the totals.
    pub async fn finish(self) -> Arc<LockStats> {
        self.stop.store(true, Ordering::Relaxed);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(6), &mut task)
            .await
            .is_err()
        {
            task.abort();
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
    }
}
