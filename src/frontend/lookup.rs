//! Finding a logging-in user's secret: the auth file first, else (with `auth_user` set for
//! the database) `auth_query` run in Postgres, as PgBouncer does.

use crate::auth::Secret;
use crate::backend::auth_query::{auth_user_password, AuthQueryError};
use crate::backend::conn::Login;
use crate::config::Target;
use crate::live::Snapshot;
use crate::App;

/// The secret of `user` for a login to `target`: from the auth file, else from auth_query
/// when the database has an auth_user. `Ok(None)`: no usable secret (the login fails as a
/// wrong password would).
pub async fn secret(
    state: &App,
    app: &Snapshot,
    target: Option<&Target>,
    user: &str,
) -> Result<Option<Secret>, AuthQueryError> {
    if let Some(s) = app.users.get(user) {
        return Ok(Some(s.clone()));
    }
    // The admin console (no target) never runs auth_query.
    let Some((target, auth_user)) = target.and_then(|t| t.auth_user.as_ref().map(|u| (t, u)))
    else {
        return Ok(None);
    };
    let on = match &target.auth_dbname {
        Some(db) => app.config.target(db).unwrap_or_else(|| target.clone()),
        None => target.clone(),
    };
    let (plain, md5) = auth_user_password(&app.users, auth_user);
    if let Some(h) = md5 {
        state.keyring.learn_md5(auth_user, h);
    }
    let password = if on.user.as_deref() == Some(auth_user.as_str()) {
        on.password.clone().or(plain)
    } else {
        plain
    };
    let tls = app
        .server_tls
        .get(&on.tls)
        .map_err(|e| AuthQueryError::Login {
            user: auth_user.clone(),
            source: crate::error::ServerError::Tls(e.to_string()),
        })?;
    let login = Login {
        host: on.host.clone(),
        port: on.port,
        database: on.dbname.clone(),
        user: auth_user.clone(),
        passthrough: password.is_none().then(|| state.keyring.clone()),
        password,
        tls,
        params: Vec::new(),
        connect_query: None,
    };
    state
        .auth_conns
        .lookup(
            &login,
            &target.auth_query,
            user,
            app.timeouts.server_connect,
        )
        .await
}
