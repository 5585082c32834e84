//! NOTIFY-SPEC section D (session and scope), proven differentially: every scenario runs
//! against PostgreSQL and through pgherald (transaction and session pooling), and the
//! normalized transcripts must be equal (see `support/diff.rs`).

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{both, check_all, Scenario};
use support::postgres::{DB1, DB2, SUPERUSER, TRUST_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d29_discard_all() {
    let mut scs = both(|_| {
        Scenario::new("d29 DISCARD ALL and RESET ALL", 2)
            .s(0, "LISTEN d29c")
            .s(0, "LISTEN d29d")
            .s(0, "RESET ALL")
            .s(1, "NOTIFY d29c, 'kept by RESET ALL'")
            .s(0, "DISCARD ALL")
            .s(0, "SELECT pg_listening_channels()")
            .s(1, "NOTIFY d29c, 'not delivered'")
            .s(0, "LISTEN d29c")
            .s(0, "BEGIN")
            .s(0, "DISCARD ALL")
            .s(0, "ROLLBACK")
            .s(1, "NOTIFY d29c, 'still listening'")
    });
    scs.push(
        Scenario::new("d29 DISCARD ALL in a multi-statement Query", 2)
            .q(0, "LISTEN d29c")
            .q(0, "LISTEN d29e; DISCARD ALL")
            .q(0, "SELECT 1; DISCARD ALL")
            .q(0, "SELECT pg_listening_channels()")
            .q(1, "NOTIFY d29c, 'still listening'"),
    );
    check_all(scs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d29_discard_all_in_a_pipeline() {
    check_all(vec![
        Scenario::new("d29 DISCARD ALL in an extended batch", 2)
            .q(0, "LISTEN d29p")
            .batch(0, &["LISTEN d29q", "DISCARD ALL"])
            .batch(0, &["SELECT 1", "DISCARD ALL"])
            .q(0, "SELECT pg_listening_channels()")
            .q(1, "NOTIFY d29p, 'still listening'"),
        // The pipeline mark of an Execute pgherald answers: the server's own checks come first
        // (inside a block), other statements that refuse a pipeline fail too, it takes no
        // snapshot, and it ends with the transaction (a COMMIT in the batch).
        Scenario::new("d29 pipeline rule after intercepted Executes", 2)
            .q(0, "LISTEN d29s")
            .batch(0, &["NOTIFY d29s, 'rolled back'", "VACUUM"])
            .batch(
                0,
                &["SELECT pg_notify('d29s', 'rolled back')", "DISCARD ALL"],
            )
            .batch(0, &["BEGIN", "LISTEN d29t", "DISCARD ALL"])
            .q(0, "ROLLBACK")
            .batch(
                0,
                &[
                    "BEGIN ISOLATION LEVEL REPEATABLE READ",
                    "LISTEN d29u",
                    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "SHOW transaction_isolation",
                    "COMMIT",
                ],
            )
            .q(0, "SELECT pg_listening_channels()")
            .batch(
                0,
                &[
                    "SELECT pg_listening_channels()",
                    "LISTEN d29v",
                    "COMMIT",
                    "DISCARD ALL",
                ],
            )
            .q(0, "SELECT pg_listening_channels()")
            .q(1, "NOTIFY d29s, 'nobody listens'"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d30_disconnect_ends_listens_and_transactions() {
    check_all(both(|_| {
        Scenario::new("d30 disconnect", 2)
            .s(0, "LISTEN d30c")
            .disconnect(0)
            .connect(0)
            .s(1, "NOTIFY d30c, 'nobody listens'")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "LISTEN d30c")
            .s(1, "BEGIN")
            .s(1, "NOTIFY d30c, 'dies with the session'")
            .disconnect(1)
            .connect(1)
            .s(1, "BEGIN")
            .s(1, "SELECT 1")
            .s(1, "NOTIFY d30c, 'dies with the socket'")
            .drop_conn(1)
            .connect(1)
            .s(1, "NOTIFY d30c, 'delivered'")
            .s(0, "BEGIN")
            .s(1, "NOTIFY d30c, 'queued for a listener in a block'")
            .drop_conn(0)
            .connect(0)
            .s(1, "NOTIFY d30c, 'nobody again'")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d31_scope_is_database_and_channel() {
    check_all(both(|_| {
        Scenario::new("d31 databases and users", 4)
            .login_as(0, SUPERUSER, DB1)
            .login_as(1, TRUST_USER, DB2)
            .login_as(2, TRUST_USER, DB1)
            .login_as(3, SUPERUSER, DB2)
            .s(0, "LISTEN d31c")
            .s(1, "LISTEN d31c")
            .s(2, "NOTIFY d31c, 'db1 by u_trust'")
            .s(3, "NOTIFY d31c, 'db2 by postgres'")
            .s(2, "SELECT pg_notify('d31c', 'db1 pg_notify')")
            .s(1, "NOTIFY d31c, 'db2 self'")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "pgherald bug: no client_encoding conversion of channels and payloads, to or from a non-UTF8 client"]
async fn d32_client_encoding_conversion() {
    // The server encoding is UTF8. A LATIN1 listener gets channel and payload converted;
    // a LATIN1 sender's text is converted to UTF8 (the UTF-8 bytes of "é" written by a
    // LATIN1 client are the two characters "Ã©").
    check_all(both(|_| {
        Scenario::new("d32 LATIN1 listener and sender", 2)
            .s(0, "SET client_encoding = 'LATIN1'")
            .s(0, "LISTEN d32c")
            .s(1, "LISTEN d32c")
            .s(1, "NOTIFY d32c, 'café'")
            .s(0, "NOTIFY d32c, 'é from LATIN1'")
            .s(0, "LISTEN d32é")
            .s(0, "SELECT pg_listening_channels()")
            .s(1, "SELECT pg_listening_channels()")
            .s(1, "SELECT pg_notify('d32Ã©', 'converted channel')")
            .s(0, "RESET client_encoding")
            .s(1, "NOTIFY d32c, 'UTF8 again'")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "pgherald bug: a notification the listener's client_encoding cannot represent is sent raw (Postgres: FATAL 22P05)"]
async fn d32_unconvertible_notification_closes_the_listener() {
    check_all(vec![Scenario::new("d32 no equivalent in LATIN1", 3)
        .q(0, "SET client_encoding = 'LATIN1'")
        .q(0, "LISTEN d32x")
        .q(2, "LISTEN d32x")
        .q(1, "NOTIFY d32x, '中'")
        .q(1, "NOTIFY d32x, 'after'")])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d33_queue_usage() {
    // The 8 GB queue, its 50% WARNING and the full-queue 54000 cannot be reached in a
    // test: they need gigabytes of notifications held back by a lagging listener. What is
    // checked is that the usage reads as (about) zero when nobody lags.
    check_all(both(|_| {
        Scenario::new("d33 pg_notification_queue_usage", 2)
            .s(0, "LISTEN d33c")
            .s(1, "NOTIFY d33c, 'x'")
            .s(
                1,
                "SELECT round(pg_notification_queue_usage()::numeric, 2) AS usage",
            )
    }))
    .await;
}
