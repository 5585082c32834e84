//! The receiving end of a listener's bounded queue of NotificationResponse frames, drained
//! by its session task (the hub's publishers fill it).

use std::fmt;
use std::sync::Arc;

use super::hub::{lock, Delivery, Shared};

/// The receiving end of a subscriber's bounded queue, drained by its session task.
pub struct Mailbox {
    pub(super) shared: Arc<Shared>,
    pub(super) limit: usize,
}

impl Mailbox {
    /// Waits for the next delivery. Returns None once the subscriber is dropped and the queue
    /// is drained, or after `Delivery::Overflow` was returned. Cancel-safe (use in `select!`).
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register as a waiter before looking, so a push after the look still wakes us.
            notified.as_mut().enable();
            match self.take() {
                Take::Got(d) => return Some(d),
                Take::Closed => return None,
                Take::Empty => notified.await,
            }
        }
    }

    /// Takes the next delivery if one is ready; None if the queue is empty (or closed).
    pub fn try_recv(&mut self) -> Option<Delivery> {
        match self.take() {
            Take::Got(d) => Some(d),
            Take::Empty | Take::Closed => None,
        }
    }

    /// Number of frames waiting.
    pub fn len(&self) -> usize {
        lock(&self.shared.queue).frames.len()
    }

    /// True when no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when nothing more will ever be delivered.
    pub fn is_closed(&self) -> bool {
        let q = lock(&self.shared.queue);
        q.frames.is_empty() && (q.overflow_reported || (q.sender_gone && !q.overflowed))
    }

    fn take(&self) -> Take {
        let mut q = lock(&self.shared.queue);
        if let Some((_, f)) = q.frames.pop_front() {
            return Take::Got(Delivery::Frame(f));
        }
        // Give back memory a burst left behind.
        if q.frames.capacity() > 1024 {
            q.frames.shrink_to(64);
        }
        if q.overflowed {
            if q.overflow_reported {
                return Take::Closed;
            }
            q.overflow_reported = true;
            return Take::Got(Delivery::Overflow { limit: self.limit });
        }
        if q.sender_gone {
            Take::Closed
        } else {
            Take::Empty
        }
    }
}

enum Take {
    Got(Delivery),
    Empty,
    Closed,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        q.receiver_gone = true;
        q.frames.clear();
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("len", &self.len())
            .field("limit", &self.limit)
            .finish()
    }
}
