//! `auth_type = hba`: the `auth_hba_file` in Postgres's pg_hba.conf format, as PgBouncer
//! reads it, and the choice of a login method for a connection (the first matching line).
//! Record types `local`, `host`, `hostssl`, `hostnossl`; databases `all`, `sameuser`,
//! `replication` and names; users `all` and names; addresses `all`, `ADDR/LEN` or
//! `ADDR MASK`, IPv4 and IPv6; methods `trust`, `reject`, `md5`, `password`,
//! `scram-sha-256`, `cert`, `peer`. What PgBouncer or pgherald does not support (`@file`,
//! `+group`, `samehost`, host names, options such as `map=`) is an error naming the line.

use std::net::IpAddr;

/// The method a matching line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// trust.
    Trust,
    /// reject.
    Reject,
    /// md5.
    Md5,
    /// password (served as md5, as pgherald's `auth_type = plain`).
    Password,
    /// scram-sha-256.
    ScramSha256,
    /// cert.
    Cert,
    /// peer (Unix sockets only: never matches a TCP client).
    Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    All,
    SameUser,
    Replication,
    Is(String),
}

#[derive(Debug, Clone)]
struct Rule {
    kind: Kind,
    databases: Vec<Name>,
    users: Vec<Name>,
    /// None: `all` (or a `local` line).
    net: Option<(IpAddr, u32)>,
    method: Method,
}

/// A parsed HBA file.
#[derive(Debug, Clone, Default)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// A problem at a line of the HBA file.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HbaError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Split a line into fields: white space separates, `"..."` quotes, `#` starts a comment.
/// Each field is a list of (item, was quoted), split at commas outside quotes.
fn fields(line: &str) -> Result<Vec<Vec<(String, bool)>>, String> {
    let mut out: Vec<Vec<(String, bool)>> = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(out),
            _ => {}
        }
        let mut field = Vec::new();
        let (mut item, mut quoted, mut in_quotes) = (String::new(), false, false);
        while let Some(&c) = chars.peek() {
            if !in_quotes && (c.is_whitespace() || c == '#') {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    quoted = true;
                }
                ',' if !in_quotes => field.push((std::mem::take(&mut item), quoted)),
                c => item.push(c),
            }
        }
        if in_quotes {
            return Err("unterminated quoted string".into());
        }
        field.push((item, quoted));
        out.push(field);
    }
}

fn names(field: &[(String, bool)], what: &str) -> Result<Vec<Name>, String> {
    field
        .iter()
        .map(|(s, quoted)| {
            if *quoted {
                return Ok(Name::Is(s.clone()));
            }
            match s.as_str() {
                "" => Err(format!("empty {what} name")),
                "all" => Ok(Name::All),
                "sameuser" if what == "database" => Ok(Name::SameUser),
                "replication" if what == "database" => Ok(Name::Replication),
                "samerole" | "samegroup" => Err(format!("{s} is not supported")),
                s if s.starts_with('@') => Err(format!(
                    "{what} lists from files ({s}) are not supported by pgherald"
                )),
                s if s.starts_with('+') => Err(format!("group membership ({s}) is not supported")),
                s => Ok(Name::Is(s.to_string())),
            }
        })
        .collect()
}

fn single<'a>(field: &'a [(String, bool)], what: &str) -> Result<&'a str, String> {
    match field {
        [(s, _)] => Ok(s),
        _ => Err(format!("{what} must be a single value")),
    }
}

fn address(addr: &str, mask: Option<&str>) -> Result<(IpAddr, u32), String> {
    let bad = || {
        format!("invalid IP address \"{addr}\" (pgherald reads addresses and CIDR ranges; samehost, samenet and host names are not supported)")
    };
    let (ip, len) = match addr.split_once('/') {
        Some((ip, len)) => (
            ip.parse::<IpAddr>().map_err(|_| bad())?,
            Some(len.parse::<u32>().map_err(|_| bad())?),
        ),
        None => (addr.parse::<IpAddr>().map_err(|_| bad())?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match (len, mask) {
        (Some(l), None) => l,
        (None, Some(m)) => {
            let m: IpAddr = m.parse().map_err(|_| format!("invalid IP mask \"{m}\""))?;
            match (ip, m) {
                (IpAddr::V4(_), IpAddr::V4(m)) => u32::from(m).leading_ones(),
                (IpAddr::V6(_), IpAddr::V6(m)) => u128::from(m).leading_ones(),
                _ => return Err("IP address and mask do not match in family".into()),
            }
        }
        _ => return Err(format!("{addr}: give ADDRESS/LENGTH or ADDRESS MASK")),
    };
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u32)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & m == u128::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(v4) => in_net(IpAddr::V4(v4), (net, len)),
            None => false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

fn rule(f: &[Vec<(String, bool)>]) -> Result<Rule, String> {
    let kind = match single(&f[0], "connection type")? {
        "local" => Kind::Local,
        "host" => Kind::Host,
        "hostssl" => Kind::HostSsl,
        "hostnossl" => Kind::HostNoSsl,
        other => return Err(format!("invalid connection type \"{other}\"")),
    };
    let need = if kind == Kind::Local { 4 } else { 5 };
    if f.len() < need {
        return Err("end-of-line before authentication method".into());
    }
    let databases = names(&f[1], "database")?;
    let users = names(&f[2], "user")?;
    let mut at = 3;
    let net = if kind == Kind::Local {
        None
    } else {
        let a = single(&f[3], "address")?;
        at = 4;
        if a == "all" {
            None
        } else if a.contains('/') {
            Some(address(a, None)?)
        } else {
            let m = f.get(4).map(|m| single(m, "mask")).transpose()?;
            at = 5;
            Some(address(a, m)?)
        }
    };
    let Some(m) = f.get(at) else {
        return Err("end-of-line before authentication method".into());
    };
    let method = match single(m, "authentication method")? {
        "trust" => Method::Trust,
        "reject" => Method::Reject,
        "md5" => Method::Md5,
        "password" => Method::Password,
        "scram-sha-256" => Method::ScramSha256,
        "cert" => Method::Cert,
        "peer" => Method::Peer,
        other => return Err(format!("unsupported authentication method \"{other}\"")),
    };
    if let Some(opt) = f.get(at + 1) {
        return Err(format!(
            "authentication options ({}) are not supported by pgherald",
            opt[0].0
        ));
    }
    Ok(Rule {
        kind,
        databases,
        users,
        net,
        method,
    })
}

impl Hba {
    /// Parse the text of an HBA file.
    pub fn parse(text: &str) -> Result<Hba, HbaError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message| HbaError {
                line: i + 1,
                message,
            };
            let f = fields(line).map_err(err)?;
            if f.is_empty() {
                continue;
            }
            rules.push(rule(&f).map_err(err)?);
        }
        Ok(Hba { rules })
    }

    /// The method of the first line matching a TCP client at `addr` (over TLS or not) for
    /// `database` and `user`; None when no line matches.
    pub fn method(&self, addr: IpAddr, tls: bool, database: &str, user: &str) -> Option<Method> {
        let matches = |list: &[Name], name: &str| {
            list.iter().any(|n| match n {
                Name::All => true,
                Name::SameUser => database == user,
                Name::Replication => false,
                Name::Is(s) => s == name,
            })
        };
        self.rules
            .iter()
            .find(|r| {
                let kind = match r.kind {
                    Kind::Local => false,
                    Kind::Host => true,
                    Kind::HostSsl => tls,
                    Kind::HostNoSsl => !tls,
                };
                kind && r.net.is_none_or(|n| in_net(addr, n))
                    && matches(&r.databases, database)
                    && matches(&r.users, user)
            })
            .map(|r| r.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins() {
        let h = Hba::parse(
            "# comment\n\
             local all all peer\n\
             hostssl all all 0.0.0.0/0 cert\n\
             host \"db1\",db2 alice 127.0.0.1/32 trust   # trailing comment\n\
             host sameuser bob 10.0.0.0 255.0.0.0 md5\n\
             host all bob ::1/128 scram-sha-256\n\
             hostnossl all carol all reject\n\
             host all all 192.168.0.0/16 password\n",
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let m = |a, tls, d, u| h.method(ip(a), tls, d, u);
        assert_eq!(m("127.0.0.1", false, "db2", "alice"), Some(Method::Trust));
        assert_eq!(m("127.0.0.1", true, "db2", "alice"), Some(Method::Cert));
        assert_eq!(m("127.0.0.1", false, "db3", "alice"), None);
        assert_eq!(m("10.1.2.3", false, "bob", "bob"), Some(Method::Md5));
        assert_eq!(m("10.1.2.3", false, "db1", "bob"), None);
        assert_eq!(m("::1", false, "x", "bob"), Some(Method::ScramSha256));
        assert_eq!(m("1.2.3.4", false, "x", "carol"), Some(Method::Reject));
        assert_eq!(m("192.168.7.7", false, "x", "dave"), Some(Method::Password));
        assert_eq!(
            m("::ffff:192.168.7.7", false, "x", "dave"),
            Some(Method::Password)
        );
    }

    #[test]
    fn unsupported_forms_name_their_line() {
        for (text, needle) in [
            ("host all all samehost trust", "samehost"),
            ("host all +admins 127.0.0.1/32 trust", "group"),
            ("host @dbs all 127.0.0.1/32 trust", "files"),
            (
                "host all all 127.0.0.1/32 ident",
                "unsupported authentication method",
            ),
            ("host all all 127.0.0.1/32 cert map=x", "options"),
            ("host all all 127.0.0.1/32", "end-of-line"),
            ("hostgssenc all all all trust", "connection type"),
            ("host \"all all all trust", "unterminated"),
        ] {
            let e = Hba::parse(&format!("# first\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }
}
