//! The accept loop: one task per client connection until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::App;

/// Accept clients until `shutdown` turns true, spawning a session task for each.
pub async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: &mut watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let app = app.clone();
                    let span = tracing::info_span!("client", %peer);
                    tokio::spawn(super::open::serve(app, stream).instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => {}
        }
    }
}
