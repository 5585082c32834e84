//! The admin console: a client that logged in to the virtual database `pgbouncer` (or
//! `pgherald`) speaks the simple query protocol to pgherald itself. Access follows
//! PgBouncer: the normal client authentication, then `admin_users` may run everything and
//! `stats_users` the SHOW commands; anyone else gets FATAL "not allowed".

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::commands::{self, err, AdminError};
use super::show;
use crate::frontend::client::ClientIo;
use crate::frontend::login::Startup;
use crate::live::Snapshot;
use crate::protocol::reply::{self, Severity};
use crate::App;

/// The longest console command accepted (PgBouncer's admin commands are short).
const MAX_COMMAND: usize = 64 * 1024;

/// Serve an authenticated console connection to its end (the caller holds its client slot).
pub async fn serve(app: Arc<App>, mut client: ClientIo, start: Startup, snap: Arc<Snapshot>) {
    let admin = snap.is_admin(&start.user);
    if !admin && !snap.is_stats(&start.user) {
        client.fatal("08P01", "not allowed").await;
        return;
    }
    tracing::info!(user = %start.user, admin, "console login");
    let version = format!("{}/pgherald", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        reply::parameter_status(&mut client.out, k, v);
    }
    reply::backend_key_data(&mut client.out, 0, 0);
    reply::ready_for_query(&mut client.out, b'I');
    if client.flush().await.is_err() {
        return;
    }
    loop {
        let Ok((tag, body)) = client.next_message(MAX_COMMAND).await else {
            return;
        };
        match tag {
            b'Q' => {
                let q = query_text(body);
                match run(&app, admin, &q).await {
                    Ok(Some(out)) => client.out.extend_from_slice(&out),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("console: {e}");
                        reply::error(
                            &mut client.out,
                            Severity::Error,
                            e.code,
                            &e.message,
                            e.detail.as_deref(),
                        );
                    }
                }
                reply::ready_for_query(&mut client.out, b'I');
                if client.flush().await.is_err() {
                    return;
                }
            }
            b'X' => return,
            b'P' | b'B' | b'E' => {
                let msg = "extended query protocol not supported by admin console";
                client.fatal("08P01", msg).await;
                return;
            }
            other => {
                let msg = format!(
                    "unsupported packet type for admin console: {}",
                    other as char
                );
                client.fatal("08P01", &msg).await;
                return;
            }
        }
    }
}

fn query_text(mut body: BytesMut) -> String {
    if body.last() == Some(&0) {
        body.truncate(body.len() - 1);
    }
    let s = String::from_utf8_lossy(body.chunk()).into_owned();
    s
}

/// `CMD [arg] [;]` as PgBouncer's console grammar accepts it: words are `[0-9a-z_]+`
/// (any case) or double-quoted identifiers.
pub fn parse(q: &str) -> Option<(String, Option<String>)> {
    let mut rest = q.trim();
    if let Some(r) = rest.strip_suffix(';') {
        rest = r.trim_end();
    }
    let (cmd, tail) = word(rest)?;
    let tail = tail.trim_start();
    if tail.is_empty() {
        return Some((cmd.to_ascii_lowercase(), None));
    }
    let (arg, end) = word(tail)?;
    if !end.trim().is_empty() {
        return None;
    }
    Some((cmd.to_ascii_lowercase(), Some(arg)))
}

fn word(s: &str) -> Option<(String, &str)> {
    if let Some(r) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = r.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if r[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return (!out.is_empty()).then_some((out, &r[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let rest = &s[end..];
    if !rest.is_empty() && !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    Some((s[..end].to_string(), rest))
}

fn needs_admin(admin: bool) -> Result<(), AdminError> {
    if admin {
        Ok(())
    } else {
        Err(err("admin access needed"))
    }
}

/// Run one console query; `Ok(None)` means the connection ends (SHUTDOWN).
pub async fn run(app: &App, admin: bool, q: &str) -> Result<Option<BytesMut>, AdminError> {
    let invalid = || err(format!("invalid command '{q}', use SHOW HELP;"));
    let (cmd, arg) = parse(q).ok_or_else(invalid)?;
    let arg = arg.as_deref();
    let mut out = BytesMut::new();
    let done = |out: &mut BytesMut, tag: &str| reply::command_complete(out, tag);
    match cmd.as_str() {
        "show" | "select" => {
            let what = arg.ok_or_else(invalid)?.to_ascii_lowercase();
            let table = match what.as_str() {
                "pools" => show::pools(app),
                "clients" => show::clients(app),
                "servers" => show::servers(app),
                "stats" => show::stats(app),
                "stats_totals" => show::stats_totals(app),
                "stats_averages" => show::stats_averages(app),
                "databases" => show::databases(app),
                "users" => show::users(app),
                "config" => commands::config(app),
                "lists" => show::lists(app),
                "state" => show::state(app),
                "version" => show::version(),
                "channels" => commands::channels(app),
                "listeners" => commands::listeners(app),
                "relays" => commands::relays(app),
                "help" => {
                    reply::notice(&mut out, "NOTICE", "00000", HELP);
                    done(&mut out, "SHOW");
                    return Ok(Some(out));
                }
                _ => return Err(invalid()),
            };
            table.encode(&mut out);
        }
        "reload" => {
            if arg.is_some() {
                return Err(invalid());
            }
            needs_admin(admin)?;
            commands::reload(app)?;
            done(&mut out, "RELOAD");
        }
        "pause" => {
            needs_admin(admin)?;
            commands::pause(app, arg).await?;
            done(&mut out, "PAUSE");
        }
        "resume" => {
            needs_admin(admin)?;
            commands::resume(app, arg)?;
            done(&mut out, "RESUME");
        }
        "disable" | "enable" => {
            needs_admin(admin)?;
            commands::disable(app, arg, cmd == "disable")?;
            done(&mut out, &cmd.to_ascii_uppercase());
        }
        "kill" => {
            needs_admin(admin)?;
            commands::kill(app, arg).await?;
            done(&mut out, "KILL");
        }
        "kill_client" => {
            needs_admin(admin)?;
            commands::kill_client(app, arg)?;
            done(&mut out, "KILL_CLIENT");
        }
        "reconnect" => {
            needs_admin(admin)?;
            commands::reconnect(app, arg)?;
            done(&mut out, "RECONNECT");
        }
        "wait_close" => {
            needs_admin(admin)?;
            commands::wait_close(app, arg).await?;
            done(&mut out, "WAIT_CLOSE");
        }
        "shutdown" => {
            if arg.is_some() {
                return Err(invalid());
            }
            needs_admin(admin)?;
            commands::shutdown(app);
            return Ok(None);
        }
        _ => return Err(invalid()),
    }
    Ok(Some(out))
}

const HELP: &str = "Console usage\n\
\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW LISTS|STATE|STATS|STATS_TOTALS|STATS_AVERAGES\n\
\tSHOW CHANNELS|LISTENERS|RELAYS\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <id>\n\
\tWAIT_CLOSE [<db>]\n\
\tSHUTDOWN";

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn grammar_is_pgbouncers() {
        assert_eq!(
            parse("SHOW POOLS;"),
            Some(("show".into(), Some("POOLS".into())))
        );
        assert_eq!(parse("  reload "), Some(("reload".into(), None)));
        assert_eq!(
            parse("pause \"my db\""),
            Some(("pause".into(), Some("my db".into())))
        );
        assert_eq!(parse("show pools extra"), None);
        assert_eq!(parse("select 1+1"), None);
        assert_eq!(parse(""), None);
    }
}
