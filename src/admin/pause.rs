//! PAUSE/RESUME and DISABLE/ENABLE state: which databases hand out no server connections
//! (clients wait at their next checkout) and which refuse new clients. Sessions check one
//! atomic per checkout; only a paused session subscribes to the state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Paused and disabled databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    /// Everything paused (PAUSE without a database, or SHUTDOWN WAIT_FOR_SERVERS).
    pub all: bool,
    /// Paused databases.
    pub paused: BTreeSet<String>,
    /// Databases refusing new clients.
    pub disabled: BTreeSet<String>,
}

impl Gates {
    /// Is `database` paused?
    pub fn is_paused(&self, database: &str) -> bool {
        self.all || self.paused.contains(database)
    }
}

/// The shared state.
#[derive(Debug)]
pub struct Pause {
    any: AtomicBool,
    tx: watch::Sender<Gates>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            any: AtomicBool::new(false),
            tx: watch::channel(Gates::default()).0,
        }
    }
}

impl Pause {
    /// Change the gates.
    pub fn update(&self, f: impl FnOnce(&mut Gates)) {
        self.tx.send_modify(|g| {
            f(g);
            self.any
                .store(g.all || !g.paused.is_empty(), Ordering::Release);
        });
    }

    /// A copy of the gates.
    pub fn gates(&self) -> Gates {
        self.tx.borrow().clone()
    }

    /// Is `database` refusing new clients?
    pub fn is_disabled(&self, database: &str) -> bool {
        self.tx.borrow().disabled.contains(database)
    }

    /// Wait while `database` is paused (returns at once, one atomic load, when nothing is).
    pub async fn wait_resumed(&self, database: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|g| !g.is_paused(database)).await;
    }
}
