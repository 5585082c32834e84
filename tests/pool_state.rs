//! Session state in transaction mode (issue 11): what one client changes or leaves on a
//! pooled server never reaches another client; settings follow their client; state pgherald
//! cannot carry (advisory locks, SQL PREPARE, temporary tables) pins the client to its server,
//! and a server whose client vanished is reset before anyone else has it.

mod support;

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DB1, SUPERUSER, TRUST_USER};
use support::raw::Raw;
use tokio_postgres::{Client, SimpleQueryMessage};

async fn one(c: &Client, sql: &str) -> String {
    let msgs = c.simple_query(sql).await.expect(sql);
    msgs.into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .expect("a row")
}

async fn code(c: &Client, sql: &str) -> String {
    let e = c.simple_query(sql).await.expect_err(sql);
    e.as_db_error()
        .expect("a server error")
        .code()
        .code()
        .to_string()
}

async fn herald(size: usize) -> Herald {
    Herald::start(herald::config(
        postgres::shared(),
        PoolMode::Transaction,
        size,
    ))
    .await
}

/// Advisory locks held anywhere on the test server for `key`.
async fn lock_holders(key: i32) -> String {
    let pg = postgres::shared().connect(SUPERUSER, None, DB1).await;
    one(
        &pg,
        &format!("select count(*) from pg_locks where locktype = 'advisory' and objid = {key}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_of_a_killed_client_is_not_left_on_the_server() {
    let h = herald(1).await;
    // Killed mid-transaction: the session lock outlives ROLLBACK, so the server is reset.
    let (mut raw, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    raw.query("begin; select pg_advisory_lock(4201)").await;
    assert_eq!(raw.until_ready().await.last().unwrap().body, b"T");
    drop(raw);
    let b = h.connect(SUPERUSER, None, DB1).await;
    let mine =
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()";
    assert_eq!(one(&b, mine).await, "0");
    assert_eq!(lock_holders(4201).await, "0");
    // Killed between transactions, after a lock taken in autocommit.
    let (mut raw, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    raw.query("select pg_advisory_lock(4202)").await;
    assert_eq!(raw.until_ready().await.last().unwrap().body, b"I");
    drop(raw);
    assert_eq!(one(&b, mine).await, "0");
    assert_eq!(lock_holders(4202).await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_pins_its_client_to_the_server() {
    let h = herald(2).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    assert_eq!(one(&a, "select pg_advisory_lock(4203)").await, "");
    // b takes a server inside a transaction: never the one holding a's lock.
    b.simple_query("begin").await.unwrap();
    let mine =
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()";
    assert_eq!(one(&b, mine).await, "0");
    // a's later transaction runs where its lock is, and can release it.
    assert_eq!(one(&a, "select pg_advisory_unlock(4203)").await, "t");
    b.simple_query("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_once_then_execute_in_later_transactions() {
    // What the Go pq library's users do: PREPARE once per connection, EXECUTE later.
    let h = herald(2).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    a.simple_query("prepare pq_add(int) as select $1 + 1")
        .await
        .unwrap();
    b.simple_query("begin").await.unwrap();
    assert_eq!(
        one(&b, "select count(*) from pg_prepared_statements").await,
        "0"
    );
    assert_eq!(one(&a, "execute pq_add(41)").await, "42");
    a.simple_query("begin").await.unwrap();
    assert_eq!(one(&a, "execute pq_add(1)").await, "2");
    a.simple_query("commit").await.unwrap();
    b.simple_query("commit").await.unwrap();
    // Once a has gone, its statement is gone with it.
    drop(a);
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("begin").await.unwrap();
    let d = h.connect(SUPERUSER, None, DB1).await;
    d.simple_query("begin").await.unwrap();
    for x in [&c, &d] {
        assert_eq!(
            one(
                x,
                "select count(*) from pg_prepared_statements where from_sql"
            )
            .await,
            "0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_do_not_collide() {
    let h = herald(1).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    a.simple_query("create temporary table state_tt(x int)")
        .await
        .unwrap();
    a.simple_query("insert into state_tt values (1)")
        .await
        .unwrap();
    assert_eq!(one(&a, "select count(*) from state_tt").await, "1");
    drop(a);
    let b = h.connect(SUPERUSER, None, DB1).await;
    b.simple_query("create temporary table state_tt(x int)")
        .await
        .unwrap();
    assert_eq!(one(&b, "select count(*) from state_tt").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_default_stays_with_its_client() {
    let h = herald(1).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    b.simple_query("drop table if exists state_ro; create table state_ro(x int)")
        .await
        .unwrap();
    a.simple_query("set default_transaction_read_only = on")
        .await
        .unwrap();
    b.simple_query("insert into state_ro values (1)")
        .await
        .unwrap();
    assert_eq!(code(&a, "insert into state_ro values (2)").await, "25006");
    b.simple_query("begin; insert into state_ro values (3); commit")
        .await
        .unwrap();
    assert_eq!(one(&a, "show default_transaction_read_only").await, "on");
    assert_eq!(one(&b, "show default_transaction_read_only").await, "off");
    assert_eq!(one(&b, "select count(*) from state_ro").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_seen_only_by_the_client_that_set_them() {
    let h = herald(1).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    let default = one(&b, "show work_mem").await;
    a.simple_query("set work_mem = '77MB'").await.unwrap();
    assert_eq!(one(&b, "show work_mem").await, default);
    assert_eq!(one(&a, "show work_mem").await, "77MB");
    // Only what commits counts: SET LOCAL and a rolled-back SET leave it as it was.
    a.simple_query("begin; set work_mem = '11MB'; rollback")
        .await
        .unwrap();
    a.simple_query("begin; set local work_mem = '12MB'; commit")
        .await
        .unwrap();
    assert_eq!(one(&b, "show work_mem").await, default);
    assert_eq!(one(&a, "show work_mem").await, "77MB");
    a.simple_query("reset work_mem").await.unwrap();
    assert_eq!(one(&a, "show work_mem").await, default);
    // search_path, SET ROLE and SET SESSION AUTHORIZATION the same way.
    let path = one(&b, "show search_path").await;
    a.simple_query("set search_path = pg_temp, public")
        .await
        .unwrap();
    a.simple_query(&format!("set role {TRUST_USER}"))
        .await
        .unwrap();
    assert_eq!(one(&b, "show search_path").await, path);
    assert_eq!(one(&b, "select current_user").await, SUPERUSER);
    assert_eq!(one(&a, "show search_path").await, "pg_temp, public");
    assert_eq!(one(&a, "select current_user").await, TRUST_USER);
    a.simple_query("reset role").await.unwrap();
    a.simple_query(&format!("set session authorization {TRUST_USER}"))
        .await
        .unwrap();
    assert_eq!(one(&b, "select session_user").await, SUPERUSER);
    assert_eq!(one(&a, "select session_user").await, TRUST_USER);
    assert_eq!(one(&b, "select current_user").await, SUPERUSER);
}
