//! Differential runner: a scenario of protocol steps over several raw connections runs
//! against the test PostgreSQL directly and through pgherald (transaction and session
//! pooling), and the two normalized message transcripts must be identical.
//!
//! After every step the runner waits until no connection has received anything for
//! [`wait()`] (default 100 ms, `PGHERALD_DIFF_WAIT_MS` overrides), so asynchronous
//! deliveries land in the step that caused them. Transcripts never contain timings; a
//! scenario that differs is run again (see [`attempts()`]) before the difference counts.
//!
//! The three runs (direct, transaction mode, session mode) go at the same time, each in
//! databases of its own (`<name>_pgdirect`, `<name>_pghtxn`, `<name>_pghsession`, created
//! once per test binary), since notifications are scoped by database: no run can see another's,
//! not even ones raised inside the server. Scenarios name the logical databases `db1` and
//! `db2`. `PGHERALD_DIFF_SHOW=1` prints every PostgreSQL transcript (with `--nocapture`).
//!
//! Test files include it next to `support` (`#[path = "support/diff.rs"] mod diff;`).

#![allow(dead_code)]

#[path = "diff_wire.rs"]
mod wire;
use wire::describe;
pub use wire::{encode, per_side, render, show, side_by_side, SIDE_TOKEN};

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use pgherald::config::{Config, PoolMode};
use postgres_protocol::message::frontend;

use crate::support::herald::{self, Herald};
use crate::support::postgres::{self, DB1, SUPERUSER};
use crate::support::raw::{Msg, Raw};

/// Server connections per pool in the transaction-mode run: small, so that connections
/// really are shared between clients.
pub const TXN_POOL: usize = 2;
/// Server connections per pool in the session-mode run: enough for every client.
pub const SESSION_POOL: usize = 12;
/// Longest wait for a reply a step expects before the run is cut short.
const REPLY_TIMEOUT: Duration = Duration::from_secs(8);

/// The quiet period that ends a drain.
pub fn wait() -> Duration {
    let ms = std::env::var("PGHERALD_DIFF_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// Which protocol `Scenario::s` uses for a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Query message.
    Simple,
    /// Parse, Bind, Describe(portal), Execute, Sync.
    Extended,
}

/// Both protocols, for items about the protocol form.
pub const PROTOS: [Proto; 2] = [Proto::Simple, Proto::Extended];

/// One frontend message of the extended protocol.
#[derive(Debug, Clone)]
pub enum Fe {
    /// Parse(name, sql, parameter type oids).
    Parse(String, String, Vec<u32>),
    /// Bind(portal, statement, parameter formats, values (None = NULL), result formats).
    Bind(String, String, Vec<i16>, Vec<Option<Vec<u8>>>, Vec<i16>),
    /// Describe of a statement (`S`) or portal (`P`).
    Describe(u8, String),
    /// Execute(portal, max rows).
    Execute(String, i32),
    /// Close of a statement (`S`) or portal (`P`).
    Close(u8, String),
    /// Sync.
    Sync,
    /// Flush.
    Flush,
    /// A simple Query in the middle of a batch.
    Query(String),
}

/// Parse of a named or unnamed statement without parameter types.
pub fn parse(name: &str, sql: &str) -> Fe {
    Fe::Parse(name.into(), sql.into(), vec![])
}
/// Bind with text parameters (None = NULL) and text results.
pub fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Fe {
    let values = params
        .iter()
        .map(|p| p.map(|s| s.as_bytes().to_vec()))
        .collect();
    Fe::Bind(portal.into(), stmt.into(), vec![], values, vec![])
}
/// Bind with text parameters and every result column in binary.
pub fn bind_binary(portal: &str, stmt: &str, params: &[Option<&str>]) -> Fe {
    match bind(portal, stmt, params) {
        Fe::Bind(p, s, f, v, _) => Fe::Bind(p, s, f, v, vec![1]),
        _ => unreachable!(),
    }
}
/// Describe of a portal.
pub fn describe_portal(name: &str) -> Fe {
    Fe::Describe(b'P', name.into())
}
/// Describe of a statement.
pub fn describe_stmt(name: &str) -> Fe {
    Fe::Describe(b'S', name.into())
}
/// Execute a portal to completion.
pub fn execute(portal: &str) -> Fe {
    Fe::Execute(portal.into(), 0)
}
/// Parse, Bind, Describe(portal), Execute of one statement in the unnamed statement/portal.
pub fn pbde(sql: &str) -> Vec<Fe> {
    vec![
        parse("", sql),
        bind("", "", &[]),
        describe_portal(""),
        execute(""),
    ]
}

/// Who logs in on a connection slot.
#[derive(Debug, Clone)]
pub struct Login {
    /// User name (trust authentication).
    pub user: String,
    /// Logical database, `db1` or `db2`; each run maps it to a database of its own.
    pub db: String,
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// A simple Query on a connection; read up to its ReadyForQuery.
    Query(usize, String),
    /// One statement in the scenario's protocol: a Query, or Parse, Bind,
    /// Describe(portal), Execute, Sync.
    Stmt(usize, String),
    /// Extended-protocol messages on a connection; read one ReadyForQuery per Sync.
    Ext(usize, Vec<Fe>),
    /// Send a simple Query and do not wait for its reply (a later `Read` or the drains
    /// collect it).
    SendQuery(usize, String),
    /// Send extended-protocol messages and do not wait for the replies.
    SendExt(usize, Vec<Fe>),
    /// Read on a connection up to the next ReadyForQuery.
    Read(usize),
    /// (Re)connect a slot.
    Connect(usize, Login),
    /// Send Terminate and close a slot.
    Disconnect(usize),
    /// Close a slot's socket without Terminate.
    Drop(usize),
    /// Only wait and collect (every step already ends with this).
    Drain,
}

/// A scenario: connections (all logged in before the first step) and steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Shown on mismatch.
    pub name: String,
    /// Protocol of `s` steps.
    pub proto: Proto,
    /// Initial logins, one per slot.
    pub logins: Vec<Login>,
    /// The steps.
    pub steps: Vec<Step>,
    /// After the runs, prepared transactions whose id starts with this are rolled back in
    /// every run's database (whatever the transcripts say), so none outlives the scenario.
    pub prepared_prefix: Option<String>,
}

impl Scenario {
    /// `conns` connections as the superuser to db1, simple protocol.
    pub fn new(name: &str, conns: usize) -> Scenario {
        Scenario {
            name: name.to_string(),
            proto: Proto::Simple,
            logins: (0..conns).map(|_| login(SUPERUSER, DB1)).collect(),
            steps: vec![],
            prepared_prefix: None,
        }
    }

    /// Set the protocol `s` uses (the name gets a suffix).
    pub fn proto(mut self, p: Proto) -> Scenario {
        self.proto = p;
        self.name.push_str(match p {
            Proto::Simple => " [simple]",
            Proto::Extended => " [extended]",
        });
        self
    }

    /// Roll back prepared transactions whose id starts with `prefix` after the runs.
    pub fn drop_prepared(mut self, prefix: &str) -> Scenario {
        self.prepared_prefix = Some(prefix.into());
        self
    }

    /// Log slot `i` in as `user` to `db` instead.
    pub fn login_as(mut self, i: usize, user: &str, db: &str) -> Scenario {
        self.logins[i] = login(user, db);
        self
    }

    /// A simple Query on connection `i`.
    pub fn q(mut self, i: usize, sql: &str) -> Scenario {
        self.steps.push(Step::Query(i, sql.into()));
        self
    }

    /// Send a simple Query on connection `i` without waiting for its reply.
    pub fn q_async(mut self, i: usize, sql: &str) -> Scenario {
        self.steps.push(Step::SendQuery(i, sql.into()));
        self
    }

    /// Send extended messages on connection `i` without waiting for the replies.
    pub fn ext_async(mut self, i: usize, msgs: Vec<Fe>) -> Scenario {
        self.steps.push(Step::SendExt(i, msgs));
        self
    }

    /// Read on connection `i` up to its next ReadyForQuery.
    pub fn read(mut self, i: usize) -> Scenario {
        self.steps.push(Step::Read(i));
        self
    }

    /// One statement in the scenario's protocol (P/B/D/E/S when extended).
    pub fn s(mut self, i: usize, sql: &str) -> Scenario {
        self.steps.push(Step::Stmt(i, sql.into()));
        self
    }

    /// One statement as Parse, Bind, Describe(portal), Execute, Sync.
    pub fn x(self, i: usize, sql: &str) -> Scenario {
        let mut m = pbde(sql);
        m.push(Fe::Sync);
        self.ext(i, m)
    }

    /// Several statements in one extended batch ending with Sync.
    pub fn batch(self, i: usize, sqls: &[&str]) -> Scenario {
        let mut m: Vec<Fe> = sqls.iter().flat_map(|s| pbde(s)).collect();
        m.push(Fe::Sync);
        self.ext(i, m)
    }

    /// Raw extended messages on connection `i`.
    pub fn ext(mut self, i: usize, msgs: Vec<Fe>) -> Scenario {
        self.steps.push(Step::Ext(i, msgs));
        self
    }

    /// Reconnect slot `i` as the superuser to db1.
    pub fn connect(self, i: usize) -> Scenario {
        self.connect_as(i, SUPERUSER, DB1)
    }

    /// Reconnect slot `i`.
    pub fn connect_as(mut self, i: usize, user: &str, db: &str) -> Scenario {
        self.steps.push(Step::Connect(i, login(user, db)));
        self
    }

    /// Terminate slot `i`.
    pub fn disconnect(mut self, i: usize) -> Scenario {
        self.steps.push(Step::Disconnect(i));
        self
    }

    /// Close slot `i`'s socket abruptly.
    pub fn drop_conn(mut self, i: usize) -> Scenario {
        self.steps.push(Step::Drop(i));
        self
    }

    /// An extra drain.
    pub fn drain(mut self) -> Scenario {
        self.steps.push(Step::Drain);
        self
    }
}

/// A login.
pub fn login(user: &str, db: &str) -> Login {
    Login {
        user: user.into(),
        db: db.into(),
    }
}

/// The logical databases scenarios may log in to.
pub const LOGICAL_DBS: [&str; 2] = ["db1", "db2"];
/// The runs of one check, each with its own databases.
pub const SIDES: [&str; 3] = ["pgdirect", "pghtxn", "pghsession"];

/// The database a run `side` uses for logical database `db`.
pub fn physical_db(side: &str, db: &str) -> String {
    format!("{db}_{side}")
}

/// Create every run's databases, once per test binary.
pub async fn ensure_databases() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let pg = postgres::shared();
        let c = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
        for side in SIDES {
            for db in LOGICAL_DBS {
                let name = physical_db(side, db);
                let exists = c
                    .query_opt("select 1 from pg_database where datname = $1", &[&name])
                    .await
                    .expect("look up database");
                if exists.is_none() {
                    c.simple_query(&format!("CREATE DATABASE {name}"))
                        .await
                        .expect("create database");
                }
            }
        }
    })
    .await;
}

/// Roll back every prepared transaction whose id starts with `prefix`, in the database
/// where it was prepared (that is the only place where it can be).
async fn drop_prepared(prefix: &str) {
    let pg = postgres::shared();
    for side in SIDES {
        for db in LOGICAL_DBS {
            let c = pg.connect(SUPERUSER, None, &physical_db(side, db)).await;
            let rows = c
                .query(
                    "select gid from pg_prepared_xacts \
                     where database = current_database() and starts_with(gid, $1)",
                    &[&prefix],
                )
                .await
                .expect("list prepared transactions");
            for r in rows {
                let gid: String = r.get(0);
                let sql = format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''"));
                c.simple_query(&sql)
                    .await
                    .expect("roll back a prepared transaction");
            }
        }
    }
}

/// A pgherald config for the differential runs in `mode`.
pub fn herald_config(mode: PoolMode) -> Config {
    let size = match mode {
        PoolMode::Transaction => TXN_POOL,
        PoolMode::Session => SESSION_POOL,
    };
    herald::config(postgres::shared(), mode, size)
}

/// Run `sc` directly and through pgherald in both pool modes, all at once; panic with
/// side-by-side transcripts on any difference.
pub async fn check(sc: &Scenario) {
    check_all(vec![sc.clone()]).await;
}

/// Check each scenario `f` builds, once per protocol.
pub async fn check_protocols(f: impl Fn(Proto) -> Scenario) {
    check_all(both(f)).await;
}

/// The scenario `f` builds, once per protocol.
pub fn both(f: impl Fn(Proto) -> Scenario) -> Vec<Scenario> {
    PROTOS.iter().map(|&p| f(p).proto(p)).collect()
}

/// How many times a scenario runs before a difference counts (`PGHERALD_DIFF_ATTEMPTS`,
/// default 3): on a loaded machine a delivery can land after a drain's quiet period and
/// so in the next step, on either side.
pub fn attempts() -> usize {
    std::env::var("PGHERALD_DIFF_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// Check every scenario (one after the other), then panic with every difference found.
/// A scenario that differs is run again, up to [`attempts()`] times in all; only a
/// difference on every attempt counts, and the last attempt's transcripts are shown.
pub async fn check_all(scs: Vec<Scenario>) {
    let mut failures = String::new();
    for sc in &scs {
        for attempt in 1..=attempts() {
            match compare(sc).await {
                None => break,
                Some(f) if attempt == attempts() => failures.push_str(&f),
                Some(_) => eprintln!(
                    "{}: transcripts differ on attempt {attempt}, retrying",
                    sc.name
                ),
            }
        }
    }
    assert!(failures.is_empty(), "transcripts differ:\n{failures}");
}

/// Run `sc` directly and through pgherald in both pool modes, all at once; the
/// side-by-side transcripts of every run that differs from PostgreSQL's, if any.
pub async fn compare(sc: &Scenario) -> Option<String> {
    ensure_databases().await;
    let pg = postgres::shared();
    let ht = Herald::start(herald_config(PoolMode::Transaction)).await;
    let hs = Herald::start(herald_config(PoolMode::Session)).await;
    let (direct, txn, session) = tokio::join!(
        run(pg.port, sc, SIDES[0]),
        run(ht.port(), sc, SIDES[1]),
        run(hs.port(), sc, SIDES[2]),
    );
    drop((ht, hs));
    if let Some(prefix) = &sc.prepared_prefix {
        drop_prepared(prefix).await;
    }
    if std::env::var_os("PGHERALD_DIFF_SHOW").is_some() {
        eprintln!("\n=== {} (PostgreSQL)\n{}", sc.name, show(&direct));
    }
    let mut failures = String::new();
    for (mode, got) in [("transaction", txn), ("session", session)] {
        if got != direct {
            let title = format!("{} — pgherald {mode} mode", sc.name);
            failures.push_str(&side_by_side(&title, &direct, &got));
        }
    }
    (!failures.is_empty()).then_some(failures)
}

/// The transcript of `sc` against PostgreSQL directly (to read while writing a test).
pub async fn run_direct(sc: &Scenario) -> Vec<String> {
    ensure_databases().await;
    run(postgres::shared().port, sc, SIDES[0]).await
}

/// A live connection slot.
struct Conn {
    raw: Raw,
    closed: bool,
}

/// Run a scenario against the server on `port` in run `side`'s databases, returning its
/// normalized transcript.
pub async fn run(port: u16, sc: &Scenario, side: &str) -> Vec<String> {
    let mut pids: HashMap<i32, String> = HashMap::new();
    let mut gens = vec![0usize; sc.logins.len()];
    let mut conns: Vec<Option<Conn>> = Vec::new();
    for (i, l) in sc.logins.iter().enumerate() {
        conns.push(Some(open(port, l, side, &format!("c{i}"), &mut pids).await));
    }
    let mut out = Vec::new();
    let w = wait();
    for (n, step) in sc.steps.iter().enumerate() {
        let resolved;
        let step = match (step, sc.proto) {
            (Step::Stmt(i, sql), Proto::Simple) => {
                resolved = Step::Query(*i, sql.clone());
                &resolved
            }
            (Step::Stmt(i, sql), Proto::Extended) => {
                let mut m = pbde(sql);
                m.push(Fe::Sync);
                resolved = Step::Ext(*i, m);
                &resolved
            }
            (s, _) => s,
        };
        out.push(format!("#{n} {}", describe(step)));
        let mut got: Vec<Vec<String>> = vec![vec![]; conns.len()];
        let mut stop = false;
        match step {
            Step::Query(i, sql) => {
                let mut b = BytesMut::new();
                frontend::query(&per_side(sql, side), &mut b).expect("encode query");
                stop = send_and_read(&mut conns, *i, &b, 1, &mut got, &pids).await;
            }
            Step::Ext(i, msgs) | Step::SendExt(i, msgs) => {
                let mut b = BytesMut::new();
                let mut syncs = 0;
                for m in msgs {
                    syncs += matches!(m, Fe::Sync | Fe::Query(_)) as usize;
                    encode(m, &mut b, side);
                }
                if matches!(step, Step::SendExt(..)) {
                    syncs = 0;
                }
                stop = send_and_read(&mut conns, *i, &b, syncs, &mut got, &pids).await;
            }
            Step::SendQuery(i, sql) => {
                let mut b = BytesMut::new();
                frontend::query(&per_side(sql, side), &mut b).expect("encode query");
                stop = send_and_read(&mut conns, *i, &b, 0, &mut got, &pids).await;
            }
            Step::Read(i) => {
                stop = send_and_read(&mut conns, *i, &[], 1, &mut got, &pids).await;
            }
            Step::Connect(i, l) => {
                gens[*i] += 1;
                let label = format!("c{i}.{}", gens[*i]);
                conns[*i] = Some(open(port, l, side, &label, &mut pids).await);
            }
            Step::Disconnect(i) => {
                if let Some(mut c) = conns[*i].take() {
                    let mut b = BytesMut::new();
                    frontend::terminate(&mut b);
                    c.raw.send(&b).await;
                }
            }
            Step::Drop(i) => {
                conns[*i] = None;
            }
            Step::Drain | Step::Stmt(..) => {}
        }
        drain_all(&mut conns, w, &mut got, &pids).await;
        for (i, msgs) in got.iter().enumerate() {
            for m in msgs {
                out.push(format!("  c{i}: {}", m.replace(side, SIDE_TOKEN)));
            }
        }
        if stop {
            out.push("<run stopped: a reply did not come>".into());
            break;
        }
    }
    out
}

async fn open(
    port: u16,
    l: &Login,
    side: &str,
    label: &str,
    pids: &mut HashMap<i32, String>,
) -> Conn {
    let (raw, msgs) = Raw::login(port, &l.user, &physical_db(side, &l.db)).await;
    for m in &msgs {
        if m.tag == b'K' && m.body.len() >= 4 {
            let pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
            pids.insert(pid, label.to_string());
        }
    }
    Conn { raw, closed: false }
}

/// Send `bytes` on slot `i` and read until `zs` ReadyForQuery arrived (or it closed).
/// Returns true if a reply did not come in time.
async fn send_and_read(
    conns: &mut [Option<Conn>],
    i: usize,
    bytes: &[u8],
    zs: usize,
    got: &mut [Vec<String>],
    pids: &HashMap<i32, String>,
) -> bool {
    let Some(c) = conns[i].as_mut().filter(|c| !c.closed) else {
        got[i].push("<slot is not connected: step skipped>".into());
        return false;
    };
    if !bytes.is_empty() {
        c.raw.send(bytes).await;
    }
    let mut left = zs;
    while left > 0 {
        match tokio::time::timeout(REPLY_TIMEOUT, c.raw.recv()).await {
            Err(_) => {
                got[i].push(format!("<no reply within {REPLY_TIMEOUT:?}>"));
                return true;
            }
            Ok(None) => {
                c.closed = true;
                got[i].push("<closed>".into());
                return false;
            }
            Ok(Some(m)) => {
                left -= (m.tag == b'Z') as usize;
                if let Some(s) = render(&m, pids) {
                    got[i].push(s);
                }
            }
        }
    }
    false
}

/// Collect on every open connection until each has been quiet for `w`.
async fn drain_all(
    conns: &mut [Option<Conn>],
    w: Duration,
    got: &mut [Vec<String>],
    pids: &HashMap<i32, String>,
) {
    let futs = conns.iter_mut().map(|c| async move {
        let mut msgs = Vec::new();
        let Some(c) = c.as_mut() else { return msgs };
        while !c.closed && !c.raw.quiet_for(w).await {
            match tokio::time::timeout(REPLY_TIMEOUT, c.raw.recv()).await {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => c.closed = true,
                Err(_) => break,
            }
        }
        if c.closed {
            msgs.push(Msg {
                tag: 0,
                body: vec![],
            });
        }
        msgs
    });
    let all = futures_util::future::join_all(futs).await;
    for (i, msgs) in all.into_iter().enumerate() {
        for m in msgs {
            if m.tag == 0 {
                if got[i].last().map(String::as_str) != Some("<closed>") {
                    got[i].push("<closed>".into());
                }
            } else if let Some(s) = render(&m, pids) {
                got[i].push(s);
            }
        }
    }
    // A slot that closed stays reported once.
    for c in conns.iter_mut() {
        if c.as_ref().is_some_and(|c| c.closed) {
            *c = None;
        }
    }
}
