//! The pooler through real sockets: queries, transactions, COPY, large rows, pool modes,
//! limits, cancel and parameter tracking, against a real PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DB1, DEFAULT_DB, SUPERUSER};
use support::raw::Raw;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

fn rows(msgs: Vec<SimpleQueryMessage>) -> Vec<SimpleQueryRow> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    let r = rows(c.simple_query(sql).await.expect(sql));
    r[0].get(0).unwrap_or("NULL").to_string()
}

async fn herald(mode: PoolMode, size: usize) -> Herald {
    Herald::start(herald::config(postgres::shared(), mode, size)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let h = herald(mode, 2).await;
        let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
        let msgs = c
            .simple_query("select 1 as a; select 'x' as b, 2 as c")
            .await
            .unwrap();
        let r = rows(msgs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].get("a"), Some("1"));
        assert_eq!(r[1].get("b"), Some("x"));
        // Extended protocol with parameters (unnamed statement, one round trip).
        let r = c
            .query_typed(
                "select $1::int4 + 1, $2::text",
                &[
                    (&41i32, tokio_postgres::types::Type::INT4),
                    (&"hi", tokio_postgres::types::Type::TEXT),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r[0].get::<_, i32>(0), 42);
        assert_eq!(r[0].get::<_, &str>(1), "hi");
        // Errors keep the session usable.
        let e = c.simple_query("selec 1").await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42601");
        let e = c.query_typed("select 1/0", &[]).await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "22012");
        assert_eq!(one(&c, "select 3").await, "3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back() {
    let h = herald(PoolMode::Transaction, 2).await;
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("drop table if exists tx_t; create table tx_t(v int)")
        .await
        .unwrap();
    c.simple_query("begin; insert into tx_t values (1)")
        .await
        .unwrap();
    c.simple_query("insert into tx_t values (2)").await.unwrap();
    c.simple_query("rollback").await.unwrap();
    c.simple_query("begin; insert into tx_t values (3); commit")
        .await
        .unwrap();
    let e = c.simple_query("begin; select 1/0").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22012");
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "25P02");
    c.simple_query("rollback").await.unwrap();
    assert_eq!(
        one(&c, "select string_agg(v::text, ',') from tx_t").await,
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let h = herald(PoolMode::Transaction, 2).await;
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("drop table if exists copy_t; create table copy_t(a int, b text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy copy_t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\trow {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 20_000);
    let stream = c
        .copy_out("copy (select * from copy_t order by a) to stdout")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap(), data);
    // A failing COPY leaves the session usable.
    let sink = c
        .copy_in::<_, bytes::Bytes>("copy copy_t from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\tx\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    assert_eq!(one(&c, "select count(*) from copy_t").await, "20000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mb_row_streams_both_ways() {
    let h = herald(PoolMode::Transaction, 1).await;
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("drop table if exists big_t; create table big_t(v text)")
        .await
        .unwrap();
    let big: String = "0123456789abcdef".repeat(4 * 1024 * 1024); // 64 MiB
    c.query_typed(
        "insert into big_t values ($1)",
        &[(&big, tokio_postgres::types::Type::TEXT)],
    )
    .await
    .unwrap();
    let r = c.query_typed("select v from big_t", &[]).await.unwrap();
    let got: &str = r[0].get(0);
    assert_eq!(got.len(), big.len());
    assert!(got == big);
    let r = rows(
        c.simple_query("select v, length(v) from big_t")
            .await
            .unwrap(),
    );
    assert_eq!(r[0].get(1), Some("67108864"));
    assert_eq!(r[0].get(0).map(str::len), Some(big.len()));
    c.simple_query("drop table big_t").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_in_session_mode() {
    let h = herald(PoolMode::Session, 1).await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let st = c.prepare("select $1::int8 * 2").await.unwrap();
    for i in 0..50i64 {
        let r = c.query(&st, &[&i]).await.unwrap();
        assert_eq!(r[0].get::<_, i64>(0), i * 2);
    }
    c.simple_query("prepare p(int) as select $1 + 100")
        .await
        .unwrap();
    assert_eq!(one(&c, "execute p(1)").await, "101");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_serves_more_clients_than_the_pool() {
    let h = herald(PoolMode::Transaction, 2).await;
    let setup = h.connect(SUPERUSER, None, DB1).await;
    setup
        .simple_query(
            "drop table if exists ctr; create table ctr(n int); insert into ctr values (0)",
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = h.connect(SUPERUSER, None, DB1).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.simple_query("begin; update ctr set n = n + 1; commit")
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(one(&setup, "select n from ctr").await, "200");
    let pool = h
        .app
        .pools
        .all()
        .into_iter()
        .find(|p| p.key.database == DB1)
        .unwrap();
    assert!(pool.idle_count() + pool.active_count() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_queues_clients_for_the_pool() {
    let h = herald(PoolMode::Session, 2).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            let t = tokio::spawn(conn);
            c.simple_query(&format!("select pg_sleep(0.1), {i}"))
                .await
                .unwrap();
            drop(c);
            let _ = t.await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let h = herald(mode, 2).await;
        let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
        let token = c.cancel_token();
        let started = Instant::now();
        let q = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let e = q.await.unwrap().unwrap_err();
        assert_eq!(e.code().unwrap().code(), "57014");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cancel_key_does_nothing() {
    let h = herald(PoolMode::Transaction, 2).await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let mut raw = Raw::connect(h.port()).await;
    let mut b = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(1, 2, &mut b);
    raw.send(&b).await;
    assert_eq!(
        one(&c, "select 'still fine' from pg_sleep(0.2)").await,
        "still fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.max_client_conn = 2;
    let h = Herald::start(cfg).await;
    let _a = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let _b = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let e = h
        .try_connect(SUPERUSER, None, DEFAULT_DB)
        .await
        .expect_err("third client refused");
    assert_eq!(e.code().unwrap().code(), "53300");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_gives_a_clear_error() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 1);
    cfg.query_wait_timeout = 0.5;
    let h = Herald::start(cfg).await;
    let holder = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    holder.simple_query("begin").await.unwrap();
    holder.simple_query("select 1").await.unwrap();
    let waiter = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let started = Instant::now();
    let e = waiter.simple_query("select 1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let db = e.as_db_error().expect("an ErrorResponse");
    assert!(db.message().contains("query_wait_timeout"), "{db:?}");
    holder.simple_query("commit").await.unwrap();
    assert_eq!(
        one(&h.connect(SUPERUSER, None, DEFAULT_DB).await, "select 5").await,
        "5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_begin_holds_no_server_until_the_block_needs_one() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 1);
    cfg.query_wait_timeout = 0.5;
    let h = Herald::start(cfg.clone()).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    a.simple_query("drop table if exists defer_t; create table defer_t(v int)")
        .await
        .unwrap();
    // A bare BEGIN takes no server: the pool of one stays free for others.
    a.simple_query("begin").await.unwrap();
    assert_eq!(one(&b, "select 7").await, "7");
    // The block's first statement takes the server, BEGIN included.
    a.simple_query("insert into defer_t values (1)")
        .await
        .unwrap();
    let e = b.simple_query("select 1").await.unwrap_err();
    assert!(format!("{e:?}").contains("query_wait_timeout"), "{e:?}");
    assert_eq!(one(&a, "select count(*) from defer_t").await, "1");
    a.simple_query("rollback").await.unwrap();
    let b = h.connect(SUPERUSER, None, DB1).await;
    assert_eq!(one(&b, "select count(*) from defer_t").await, "0");
    // Extended protocol inside a deferred block, then COMMIT.
    let mut a = a;
    let t = a.transaction().await.unwrap();
    t.execute("insert into defer_t values ($1)", &[&2i32])
        .await
        .unwrap();
    t.commit().await.unwrap();
    assert_eq!(
        one(&b, "select string_agg(v::text, ',') from defer_t").await,
        "2"
    );
    // Blocks that never need the server end without it; spellings keep their tags.
    for (begin, end) in [
        ("begin", "commit"),
        ("START TRANSACTION", "END WORK"),
        ("begin work;", "abort"),
    ] {
        a.simple_query(begin).await.unwrap();
        a.simple_query(end).await.unwrap();
    }
    // An error in a deferred block aborts it as on Postgres.
    a.simple_query("begin").await.unwrap();
    let e = a.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22012");
    let e = a.simple_query("select 1").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "25P02");
    a.simple_query("rollback").await.unwrap();
    drop((a, b));
    // defer_begin = false: BEGIN takes the server at once, as in PgBouncer.
    cfg.defer_begin = false;
    let h = Herald::start(cfg).await;
    let a = h.connect(SUPERUSER, None, DB1).await;
    let b = h.connect(SUPERUSER, None, DB1).await;
    a.simple_query("begin").await.unwrap();
    assert!(b.simple_query("select 1").await.is_err());
    a.simple_query("commit").await.unwrap();
    let b = h.connect(SUPERUSER, None, DB1).await;
    assert_eq!(one(&b, "select 8").await, "8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_leaves_no_dirty_server() {
    let h = herald(PoolMode::Transaction, 1).await;
    let setup = h.connect(SUPERUSER, None, DB1).await;
    setup
        .simple_query("drop table if exists kill_t; create table kill_t(v int)")
        .await
        .unwrap();
    drop(setup);
    // A raw client opens a transaction, writes, and vanishes without Terminate.
    let (mut raw, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    raw.query("begin; insert into kill_t values (1)").await;
    let msgs = raw.until_ready().await;
    assert_eq!(msgs.last().unwrap().body, b"T");
    drop(raw);
    // The single pooled server must come back clean (or be replaced).
    let c = h.connect(SUPERUSER, None, DB1).await;
    assert_eq!(one(&c, "select count(*) from kill_t").await, "0");
    c.simple_query("begin").await.unwrap();
    c.simple_query("commit").await.unwrap();
    let pg = postgres::shared().connect(SUPERUSER, None, DB1).await;
    let idle_in_tx = one(&pg, "select count(*) from pg_stat_activity where datname = 'db1' and state like 'idle in transaction%'").await;
    assert_eq!(idle_in_tx, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_server_backend_gives_57p01_and_pool_recovers() {
    let h = herald(PoolMode::Session, 2).await;
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("set application_name = 'victim57'")
        .await
        .unwrap();
    let pid = one(&c, "select pg_backend_pid()").await;
    let pg = postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    pg.simple_query(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = c.simple_query("select 1").await.unwrap_err();
    let code = e.code().map(|c| c.code().to_string());
    assert!(
        code.as_deref() == Some("57P01") || e.is_closed(),
        "expected FATAL 57P01 or a closed connection, got {e:?}"
    );
    let c2 = h.connect(SUPERUSER, None, DB1).await;
    assert_eq!(one(&c2, "select 7").await, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_follow_the_client_across_servers() {
    let h = herald(PoolMode::Transaction, 1).await;
    let a = h.try_connect(SUPERUSER, None, DEFAULT_DB).await.unwrap();
    let (b, conn) = tokio_postgres::connect(
        &(h.conn_str(SUPERUSER, None, DEFAULT_DB) + " application_name=bee"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    a.simple_query("set timezone = 'Asia/Tokyo'").await.unwrap();
    for _ in 0..3 {
        assert_eq!(one(&a, "show timezone").await, "Asia/Tokyo");
        assert_eq!(
            one(&b, "show timezone").await,
            one(
                &postgres::shared()
                    .connect(SUPERUSER, None, DEFAULT_DB)
                    .await,
                "show timezone"
            )
            .await
        );
        assert_eq!(one(&b, "show application_name").await, "bee");
        assert_eq!(one(&a, "show application_name").await, "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_negotiation() {
    let h = herald(PoolMode::Transaction, 1).await;
    // SSLRequest and GSSENCRequest are refused with 'N', then a normal startup works.
    let mut r = Raw::connect(h.port()).await;
    r.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await;
    assert_eq!(r.read_raw(1).await, b"N");
    r.send(&[0, 0, 0, 8, 4, 210, 22, 48]).await;
    assert_eq!(r.read_raw(1).await, b"N");
    r.startup(3, 0, &[("user", SUPERUSER), ("database", DEFAULT_DB)])
        .await;
    let msgs = r.until_ready().await;
    assert_eq!(msgs.first().unwrap().tag, b'R');
    assert!(msgs.iter().any(|m| m.tag == b'K'));
    assert!(msgs
        .iter()
        .any(|m| m.tag == b'S' && m.body.starts_with(b"server_version\0")));
    // A newer minor version gets NegotiateProtocolVersion naming the unknown option.
    let mut r = Raw::connect(h.port()).await;
    r.startup(
        3,
        2,
        &[
            ("user", SUPERUSER),
            ("database", DEFAULT_DB),
            ("_pq_.frob", "1"),
        ],
    )
    .await;
    let msgs = r.until_ready().await;
    let v = msgs
        .iter()
        .find(|m| m.tag == b'v')
        .expect("NegotiateProtocolVersion");
    assert_eq!(&v.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(v.body.ends_with(b"_pq_.frob\0"));
    assert_eq!(msgs.last().unwrap().tag, b'Z');
    // Protocol 2.0 is refused.
    let mut r = Raw::connect(h.port()).await;
    r.startup(2, 0, &[("user", SUPERUSER)]).await;
    let m = r.recv().await.unwrap();
    assert_eq!((m.tag, m.field(b'C').as_deref()), (b'E', Some("0A000")));
    // Unknown database.
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 1);
    cfg.upstream = None;
    cfg.databases.insert(
        DB1.into(),
        pgherald::config::DatabaseConfig {
            port: Some(postgres::shared().port),
            user: Some(SUPERUSER.into()),
            ..Default::default()
        },
    );
    let h2 = Herald::start(cfg).await;
    let e = h2
        .try_connect(SUPERUSER, None, "nosuchdb")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code().unwrap().code(), "3D000");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "database \"nosuchdb\" does not exist"
    );
    assert_eq!(
        one(
            &h2.connect(SUPERUSER, None, DB1).await,
            "select current_database()"
        )
        .await,
        DB1
    );
    // Garbage instead of a message type gets FATAL 08P01 and a close.
    let (mut r, _) = Raw::login(h.port(), SUPERUSER, DEFAULT_DB).await;
    r.send(b"\x01\0\0\0\x04").await;
    let m = r.recv().await.unwrap();
    assert_eq!((m.tag, m.field(b'C').as_deref()), (b'E', Some("08P01")));
    assert!(r.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_returns() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 1);
    cfg.shutdown_timeout = 5.0;
    let h = Herald::start(cfg).await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let port = h.port();
    let started = Instant::now();
    h.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle clients are closed at once"
    );
    assert!(c.simple_query("select 1").await.is_err());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_in_transaction_mode() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.max_prepared_statements = 3;
    let h = Herald::start(cfg).await;
    let mut tasks = Vec::new();
    for t in 0..6i64 {
        let mut c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
        tasks.push(tokio::spawn(async move {
            // Five statements per client against a limit of three per server: eviction and
            // re-preparation on whichever server the client gets.
            let mut stmts = Vec::new();
            for k in 0..5i64 {
                stmts.push(
                    c.prepare(&format!("select $1::int8 * {k} + {t} as v"))
                        .await
                        .unwrap(),
                );
            }
            for round in 0..20i64 {
                for (k, st) in stmts.iter().enumerate() {
                    let r = c.query(st, &[&round]).await.unwrap();
                    assert_eq!(r[0].get::<_, i64>(0), round * k as i64 + t);
                }
                if round % 5 == 0 {
                    c.simple_query("begin; select 1; commit").await.unwrap();
                }
            }
            // A statement that fails to prepare reports the server's error.
            let e = c
                .prepare("select * from no_such_table_xyz")
                .await
                .unwrap_err();
            assert_eq!(e.code().unwrap().code(), "42P01");
            // Inside a transaction, statements work too.
            let tx = c.transaction().await.unwrap();
            let r = tx.query(&stmts[1], &[&10i64]).await.unwrap();
            assert_eq!(r[0].get::<_, i64>(0), 10 + t);
            tx.rollback().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
