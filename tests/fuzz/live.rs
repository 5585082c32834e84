//! The live half of the fuzz tests: a running pgherald in front of the real PostgreSQL (and
//! in front of a hostile fake server), fed generated input.

use std::time::Duration;

use pgherald::config::PoolMode;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::fuzz::{self, cases as fuzz_cases};
use super::support::herald::{self, Herald};
use super::support::postgres::{self, DEFAULT_DB, SUPERUSER};
use super::support::raw::Raw;
use super::{apply, backend, client_frames, mutation, param, statement, CASE_WAIT};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Read until the peer closes; false if it never does within `CASE_WAIT`.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(CASE_WAIT, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// pgherald still logs clients in and runs their queries.
async fn still_serves(port: u16) {
    let (mut r, _) = Raw::login(port, SUPERUSER, DEFAULT_DB).await;
    r.query("SELECT 1").await;
    let msgs = r.until_ready().await;
    assert!(msgs.iter().any(|m| m.tag == b'D'), "{msgs:?}");
}

#[test]
fn corrupted_client_frames_never_hang_or_break_pgherald() {
    let rt = runtime();
    let h = rt.block_on(Herald::start(herald::config(
        postgres::shared(),
        PoolMode::Transaction,
        2,
    )));
    let port = h.port();
    let startup = {
        let mut b = vec![0, 0, 0, 8, 4, 210, 22, 47];
        let body = super::startup_body(&[
            ("user".into(), SUPERUSER.into()),
            ("database".into(), DEFAULT_DB.into()),
        ]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(&body);
        b
    };
    let strategy = (
        any::<bool>(),
        client_frames(),
        prop::collection::vec(mutation(), 0..3),
    );
    fuzz::run(
        fuzz_cases(24),
        strategy,
        |(logged_in, frames, login_mutations)| {
            rt.block_on(async {
                let mut stream = if logged_in {
                    let (r, _) = Raw::login(port, SUPERUSER, DEFAULT_DB).await;
                    let mut s = r.stream;
                    let _ = s.write_all(&frames).await;
                    s
                } else {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    let _ = s.write_all(&apply(startup.clone(), &login_mutations)).await;
                    let _ = s.write_all(&frames).await;
                    s
                };
                let _ = stream.shutdown().await;
                prop_assert!(closes(&mut stream).await, "pgherald hung");
                still_serves(port).await;
                Ok(())
            })
        },
    );
    drop(h);
}

/// What a simple Query got: the SQLSTATE and message of its error, or "ok".
async fn outcome(c: &tokio_postgres::Client, sql: &str) -> String {
    match tokio::time::timeout(CASE_WAIT, c.simple_query(sql)).await {
        Err(_) => "hang".into(),
        Ok(Ok(_)) => "ok".into(),
        Ok(Err(e)) => match e.as_db_error() {
            Some(d) => format!("{} {}", d.code().code(), d.message()),
            None => format!("client error: {e}"),
        },
    }
}

#[test]
fn generated_statements_get_postgres_own_answers() {
    let rt = runtime();
    let pg = postgres::shared();
    let (h, direct, through) = rt.block_on(async {
        let h = Herald::start(herald::config(pg, PoolMode::Transaction, 2)).await;
        let (direct, conn) = tokio_postgres::connect(
            &pg.conn_str(SUPERUSER, None, DEFAULT_DB),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let through = h.connect(SUPERUSER, None, DEFAULT_DB).await;
        (h, direct, through)
    });
    fuzz::run(fuzz_cases(256), statement(), |sql| {
        rt.block_on(async {
            let want = outcome(&direct, &sql).await;
            let got = outcome(&through, &sql).await;
            prop_assert_eq!(&got, &want, "{}", sql);
            Ok(())
        })
    });
    drop(h);
}

/// What the fake upstream sends: its login answer, then its reply to what pgherald sends next.
type Script = std::sync::Arc<std::sync::Mutex<(Vec<u8>, Vec<u8>)>>;

/// A fake upstream that answers every connection with the current script, then closes.
async fn hostile_server(listener: TcpListener, script: Script) {
    while let Ok((mut s, _)) = listener.accept().await {
        let (login, reply) = script.lock().unwrap().clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let _ = s.write_all(&login).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let _ = s.write_all(&reply).await;
        });
    }
}

#[test]
fn hostile_server_never_hangs_or_breaks_pgherald() {
    let rt = runtime();
    let script: Script = Default::default();
    let h = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 1);
        cfg.upstream = Some(format!("postgres://postgres@127.0.0.1:{port}"));
        cfg.server_connect_timeout = 5.0;
        cfg.relay = false;
        cfg.query_wait_timeout = 5.0;
        tokio::spawn(hostile_server(listener, script.clone()));
        Herald::start(cfg).await
    });
    let login_ok = [
        backend(b'R', 0i32.to_be_bytes()),
        param("server_version", "15.0"),
        param("server_encoding", "UTF8"),
        param("client_encoding", "UTF8"),
        param("standard_conforming_strings", "on"),
        param("DateStyle", "ISO, MDY"),
        param("integer_datetimes", "on"),
        backend(b'K', [0, 0, 0, 7, 0, 0, 0, 9]),
        backend(b'Z', b"I"),
    ]
    .concat();
    let select_one = [
        backend(
            b'T',
            b"\0\x01a\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        backend(b'D', b"\0\x01\0\0\0\x011"),
        backend(b'C', b"SELECT 1\0"),
        backend(b'Z', b"I"),
    ]
    .concat();
    let strategy = (
        prop::collection::vec(mutation(), 0..3),
        prop::collection::vec(mutation(), 0..3),
        prop::collection::vec(any::<u8>(), 0..32),
    );
    let port = h.port();
    fuzz::run(fuzz_cases(12), strategy, |(m_login, m_reply, junk)| {
        rt.block_on(async {
            let login = apply(login_ok.clone(), &m_login);
            let mut reply = apply(select_one.clone(), &m_reply);
            reply.extend_from_slice(&junk);
            *script.lock().unwrap() = (login, reply);
            let client = async {
                let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
                let run = async {
                    let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    c.simple_query("SELECT 1").await.map(|_| ())
                };
                tokio::time::timeout(CASE_WAIT, run).await
            };
            let res = client.await;
            prop_assert!(res.is_ok(), "pgherald hung");
            // pgherald still accepts and answers a new client.
            let mut r = Raw::connect(port).await;
            r.startup(3, 0, &[("user", SUPERUSER), ("database", DEFAULT_DB)])
                .await;
            *script.lock().unwrap() = (login_ok.clone(), select_one.clone());
            let first = r.recv_within(CASE_WAIT).await;
            prop_assert!(first.is_some(), "no answer to a new client");
            Ok(())
        })
    });
    drop(h);
}
