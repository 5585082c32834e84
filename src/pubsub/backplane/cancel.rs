//! CancelRequests between instances over Redis pub/sub. A client's session lives on one
//! instance, but a load balancer may send its cancel connection to any. Pids come in one
//! block per instance (`pid_range`), so the instance that receives a CancelRequest for a pid
//! outside its own block publishes (pid, secret) on the channel `PREFIX:cancel`; every
//! instance subscribes, and the one whose block holds the pid checks the secret and cancels
//! the query where it runs. Like a CancelRequest itself, this is best effort and answers
//! nothing: a cancel sent while Redis is unreachable is dropped (and logged).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

/// The pub/sub channel forwarded cancels travel on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}:cancel")
}

/// (pid, secret) as the 8 bytes of a CancelRequest's body.
fn encode(pid: i32, secret: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&pid.to_be_bytes());
    b[4..].copy_from_slice(&secret.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(i32, i32)> {
    let b: &[u8; 8] = b.try_into().ok()?;
    let pid = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let secret = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    Some((pid, secret))
}

/// Publish one cancel for the other instances, within `timeout`.
pub(super) async fn publish(
    client: redis::Client,
    channel: String,
    pid: i32,
    secret: i32,
    timeout: Duration,
) {
    let send = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&encode(pid, secret)[..])
            .query_async::<i64>(&mut c)
            .await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(n)) => tracing::debug!(pid, subscribers = n, "cancel request forwarded"),
        Ok(Err(e)) => tracing::warn!(pid, "could not forward a cancel request: {e}"),
        Err(_) => tracing::warn!(pid, "could not forward a cancel request: backplane timeout"),
    }
}

/// Pass on every cancel the other instances publish, resubscribing after a lost
/// connection, until `tx`'s receiver is gone.
pub(super) async fn subscribe(
    client: redis::Client,
    channel: String,
    tx: mpsc::UnboundedSender<(i32, i32)>,
) {
    while !tx.is_closed() {
        match client.get_async_pubsub().await {
            Ok(mut ps) => match ps.subscribe(&channel).await {
                Ok(()) => {
                    let mut messages = ps.on_message();
                    while let Some(m) = messages.next().await {
                        let Some(key) = decode(m.get_payload_bytes()) else {
                            continue;
                        };
                        if tx.send(key).is_err() {
                            return;
                        }
                    }
                    tracing::debug!("cancel subscription lost; subscribing again");
                }
                Err(e) => tracing::debug!("subscribing to forwarded cancels failed: {e}"),
            },
            Err(e) => tracing::debug!("connecting for forwarded cancels failed: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert_eq!(decode(&encode(1 << 20, -7)), Some((1 << 20, -7)));
        assert_eq!(decode(b"short"), None);
    }
}
