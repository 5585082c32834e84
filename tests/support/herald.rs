//! Runs pgherald in-process on 127.0.0.1:0 in front of the test PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;

use pgherald::config::{Config, PoolMode};
use tokio::sync::watch;

use super::postgres::TestPostgres;

/// A running pgherald; dropping it stops it.
pub struct Herald {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Its shared state.
    pub app: Arc<pgherald::App>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), pgherald::Error>>>,
}

/// A config pointing every database at the test server as superuser `postgres`.
pub fn config(pg: &TestPostgres, mode: PoolMode, pool_size: usize) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        upstream: Some(format!("postgres://postgres@127.0.0.1:{}", pg.port)),
        pool_mode: mode,
        default_pool_size: pool_size,
        ..Config::default()
    }
}

/// A config that logs in to the server as the client's own user (no fixed upstream user).
pub fn config_as_client_user(pg: &TestPostgres, mode: PoolMode, pool_size: usize) -> Config {
    Config {
        upstream: Some(format!("postgres://127.0.0.1:{}", pg.port)),
        ..config(pg, mode, pool_size)
    }
}

impl Herald {
    /// Bind and start serving.
    pub async fn start(config: Config) -> Herald {
        Self::start_from(config, pgherald::live::Source::default()).await
    }

    /// Bind and start serving; RELOAD and SIGHUP re-read `source`.
    pub async fn start_from(config: Config, source: pgherald::live::Source) -> Herald {
        // RUST_LOG=pgherald=debug shows pgherald's logs in test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = pgherald::Server::bind_from(config, source)
            .await
            .expect("pgherald binds");
        let addr = server.local_addr().expect("local addr");
        let app = server.app();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        Herald {
            addr,
            app,
            stop,
            task: Some(task),
        }
    }

    /// Port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// tokio-postgres connection string for this pgherald.
    pub fn conn_str(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut s = format!(
            "host=127.0.0.1 port={} user={user} dbname={db}",
            self.port()
        );
        if let Some(p) = password {
            s.push_str(&format!(" password={p}"));
        }
        s
    }

    /// Connect through pgherald with tokio-postgres.
    pub async fn connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> tokio_postgres::Client {
        self.try_connect(user, password, db)
            .await
            .expect("connect through pgherald")
    }

    /// Connect, returning the error instead of panicking.
    pub async fn try_connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Signal shutdown and wait for `run` to return.
    pub async fn stop(mut self) -> Result<(), pgherald::Error> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t.await.expect("pgherald task"),
            None => Ok(()),
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
