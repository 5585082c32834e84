//! Helpers over `support::listen` for the notify proof and scale tests: notifications as
//! comparable (pid, channel, payload) tuples, bounded waits that fail loudly with what did
//! arrive, and a client's own BackendKeyData pid exactly as tokio-postgres holds it.
//!
//! Included with `#[path = "support/notes.rs"] mod notes;` next to `mod support;`.

#![allow(dead_code)]

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_postgres::{Client, NoTls};

use crate::support::listen::Listener;

/// One received notification: (sender pid, channel, payload).
pub type Note = (i32, String, String);

/// Generous bound on any single wait for a notification; reaching it fails the test.
pub const WAIT: Duration = Duration::from_secs(120);

/// The pid the client got in BackendKeyData, exactly as tokio-postgres holds it: the
/// CancelRequest its cancel token would send, written into an in-memory pipe and decoded.
pub async fn backend_pid(c: &Client) -> i32 {
    let (mut ours, theirs) = tokio::io::duplex(64);
    c.cancel_token()
        .cancel_query_raw(theirs, NoTls)
        .await
        .expect("encode a CancelRequest");
    let mut m = [0u8; 16];
    ours.read_exact(&mut m)
        .await
        .expect("read the CancelRequest");
    assert_eq!(
        m[..8],
        [0, 0, 0, 16, 4, 210, 22, 46],
        "CancelRequest header"
    );
    i32::from_be_bytes([m[8], m[9], m[10], m[11]])
}

/// The next notification as a [`Note`], or a panic naming `who` and what came before.
async fn next(l: &mut Listener, who: &str, got: &[Note]) -> Note {
    match tokio::time::timeout(WAIT, l.rx.recv()).await {
        Ok(Some(n)) => (n.process_id(), n.channel().into(), n.payload().into()),
        Ok(None) => panic!(
            "{who}: connection closed after {} notifications: {got:?}",
            got.len()
        ),
        Err(_) => panic!("{who}: nothing for {WAIT:?} after {}: {got:?}", got.len()),
    }
}

/// Notifications until one with payload `last` (included).
pub async fn until(l: &mut Listener, last: &str, who: &str) -> Vec<Note> {
    let mut got = Vec::new();
    loop {
        let n = next(l, who, &got).await;
        let done = n.2 == last;
        got.push(n);
        if done {
            return got;
        }
    }
}

/// Exactly the next `n` notifications.
pub async fn take(l: &mut Listener, n: usize, who: &str) -> Vec<Note> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let note = next(l, who, &got).await;
        got.push(note);
    }
    got
}
