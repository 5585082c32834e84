//! Session parameters a client expects: which ones pgherald tracks, and the SET/RESET
//! statements that make a pooled server match a client before it runs the client's query.

use crate::backend::conn::{get_param, set_param, Params};

/// Parameters Postgres reports with ParameterStatus that pgherald keeps per client and
/// re-applies when transaction pooling hands the client a server that differs.
pub const TRACKED: &[&str] = &[
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// True if a startup parameter is a setting to apply on the server.
pub fn is_setting(name: &str) -> bool {
    !NOT_SETTINGS.contains(&name) && !name.starts_with("_pq_.")
}

/// True if the parameter is one Postgres reports with ParameterStatus.
pub fn is_reported(name: &str) -> bool {
    TRACKED.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// Canonical spelling of a tracked name (`datestyle` → `DateStyle`), else the name as given.
pub fn canonical(name: &str) -> &str {
    TRACKED
        .iter()
        .find(|t| t.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// The statements that make a server with reported parameters `server` and pgherald-applied
/// unreported settings `server_extra` match what the client `wants`. Empty when they match.
pub fn sync_sql(wants: &Params, server: &Params, server_extra: &Params) -> String {
    let mut sql = String::new();
    // RESETs first: one may be `session_authorization`, which the SETs after it may need.
    for (k, _) in server_extra {
        if get_param(wants, k).is_none() {
            sql.push_str(&format!("RESET {};", quote_ident(k)));
        }
    }
    for (k, v) in wants {
        let current = if is_reported(k) {
            get_param(server, k)
        } else {
            get_param(server_extra, k)
        };
        if current != Some(v.as_str()) {
            // set_config takes the value as a startup packet or postgresql.conf gives it
            // (`search_path` = `a, b` is a list of two), where SET would take one literal.
            sql.push_str(&format!(
                "SELECT pg_catalog.set_config({}, {}, false);",
                quote_literal(k),
                quote_literal(v)
            ));
        }
    }
    sql
}

/// After a sync succeeded: record unreported settings on the server side and adopt the
/// server's spelling of reported values on the client side (`utf8` → `UTF8`).
pub fn after_sync(wants: &mut Params, server: &Params, server_extra: &mut Params) {
    server_extra.retain(|(k, _)| get_param(wants, k).is_some());
    for (k, v) in wants.iter_mut() {
        if is_reported(k) {
            if let Some(actual) = get_param(server, k) {
                if actual != v {
                    *v = actual.to_string();
                }
            }
        } else {
            set_param(server_extra, k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&str, &str)]) -> Params {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn no_sql_when_matching() {
        let s = p(&[("TimeZone", "UTC"), ("application_name", "x")]);
        assert_eq!(sync_sql(&p(&[("TimeZone", "UTC")]), &s, &p(&[])), "");
    }

    #[test]
    fn sets_and_resets() {
        let wants = p(&[("application_name", "it's"), ("extra_float_digits", "3")]);
        let sql = sync_sql(
            &wants,
            &p(&[("application_name", "")]),
            &p(&[("search_path", "x")]),
        );
        assert_eq!(
            sql,
            "RESET \"search_path\";SELECT pg_catalog.set_config('application_name', 'it''s', false);\
             SELECT pg_catalog.set_config('extra_float_digits', '3', false);"
        );
    }

    #[test]
    fn adopts_server_spelling() {
        let mut wants = p(&[("client_encoding", "utf8"), ("extra_float_digits", "3")]);
        let mut extra = p(&[("search_path", "x")]);
        after_sync(&mut wants, &p(&[("client_encoding", "UTF8")]), &mut extra);
        assert_eq!(
            wants,
            p(&[("client_encoding", "UTF8"), ("extra_float_digits", "3")])
        );
        assert_eq!(extra, p(&[("extra_float_digits", "3")]));
    }

    #[test]
    fn backslashes_quoted() {
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(canonical("datestyle"), "DateStyle");
    }
}
