//! tokio-postgres clients whose notifications arrive on a channel, for LISTEN tests.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// A client plus the notifications its connection receives.
pub struct Listener {
    /// The client.
    pub client: Client,
    /// Notifications in arrival order.
    pub rx: mpsc::UnboundedReceiver<Notification>,
}

/// Connect with `conn_str` and forward every notification to the returned receiver.
pub async fn connect(conn_str: &str) -> Listener {
    let (client, mut conn) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Listener { client, rx }
}

impl Listener {
    /// The next notification, failing the test after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Notification {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .expect("timed out waiting for a notification")
            .expect("connection closed")
    }

    /// The next notification (10 s limit).
    pub async fn next(&mut self) -> Notification {
        self.next_within(Duration::from_secs(10)).await
    }

    /// True if no notification arrives within `wait`.
    pub async fn nothing_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.recv()).await.is_err()
    }

    /// This client's own pid as notifications report it: LISTEN and NOTIFY a private channel.
    pub async fn own_pid(&mut self, channel: &str) -> i32 {
        self.client
            .batch_execute(&format!("LISTEN {channel}; NOTIFY {channel}, 'me'"))
            .await
            .expect("self notify");
        let n = self.next().await;
        assert_eq!(n.channel(), channel);
        self.client
            .batch_execute(&format!("UNLISTEN {channel}"))
            .await
            .expect("unlisten");
        n.process_id()
    }
}
