//! The accept loop: one task per client connection until shutdown. Connections beyond the
//! login cap are closed at once; when accepting fails (EMFILE and friends) the loop backs
//! off instead of spinning and logs at most once a second.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use super::admission::LoginSlot;
use crate::App;

/// First pause after a failed accept; doubled per consecutive failure up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept clients until `shutdown` turns true, spawning a session task for each.
pub async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut accept_log = Throttle::default();
    let mut full_log = Throttle::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    backoff = BACKOFF_MIN;
                    let Some(slot) = LoginSlot::take(&app) else {
                        full_log.warn(|n| tracing::warn!(
                            suppressed = n,
                            "closing new connection: too many connections are logging in"
                        ));
                        drop(stream);
                        continue;
                    };
                    let app = app.clone();
                    let span = tracing::info_span!("client", %peer);
                    tokio::spawn(super::open::serve(app, stream, slot).instrument(span));
                }
                Err(e) if per_connection(&e) => {
                    tracing::debug!("accept: {e}");
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources to come back.
                    accept_log.warn(|n| tracing::warn!(
                        suppressed = n,
                        retry_in = ?backoff,
                        "accept failed: {e}"
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            },
            _ = shutdown.changed() => {}
        }
    }
}

/// Errors that concern one connection only (it was reset before being accepted).
fn per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

/// At most one log line a second; the lines in between are counted.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}
