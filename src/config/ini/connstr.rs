//! The connection strings of `[databases]` and `[users]` lines, as PgBouncer splits them:
//! `key=value` pairs separated by white space, a value either bare (up to the next space)
//! or in single quotes with `''` for a quote; empty values are refused.

/// Split a connection string into (key, value) pairs, in order; `Err` says what is wrong.
pub fn pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let b = s.as_bytes();
    let mut p = 0;
    let mut out = Vec::new();
    let skip_ws = |mut p: usize| {
        while p < b.len() && b[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    loop {
        p = skip_ws(p);
        if p >= b.len() {
            return Ok(out);
        }
        let start = p;
        while p < b.len() && b[p] != b'=' && b[p] != b' ' {
            p += 1;
        }
        let key = &s[start..p];
        p = skip_ws(p);
        if key.is_empty() || b.get(p) != Some(&b'=') {
            return Err(format!(
                "syntax error in connection string near \"{}\"",
                &s[start..]
            ));
        }
        p = skip_ws(p + 1);
        let mut value = String::new();
        if b.get(p) == Some(&b'\'') {
            p += 1;
            loop {
                match b.get(p) {
                    None => {
                        return Err(format!(
                            "syntax error in connection string: unterminated quote after {key}="
                        ))
                    }
                    Some(b'\'') if b.get(p + 1) == Some(&b'\'') => {
                        value.push('\'');
                        p += 2;
                    }
                    Some(b'\'') => {
                        p += 1;
                        break;
                    }
                    Some(_) => {
                        let ch = s[p..].chars().next().unwrap_or('\0');
                        value.push(ch);
                        p += ch.len_utf8();
                    }
                }
            }
        } else {
            let vs = p;
            while p < b.len() && b[p] != b' ' {
                p += 1;
            }
            value.push_str(&s[vs..p]);
        }
        if value.is_empty() {
            return Err(format!(
                "syntax error in connection string: empty value for {key}"
            ));
        }
        out.push((key.to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(s: &str) -> Vec<(String, String)> {
        pairs(s).unwrap()
    }

    #[test]
    fn splits_like_pgbouncer() {
        assert_eq!(
            kv(" host=db  port = 5433 password='it''s a secret' dbname=x"),
            vec![
                ("host".into(), "db".into()),
                ("port".into(), "5433".into()),
                ("password".into(), "it's a secret".into()),
                ("dbname".into(), "x".into()),
            ]
        );
        assert_eq!(kv(""), vec![]);
        assert_eq!(kv("a=b=c"), vec![("a".into(), "b=c".into())]);
        assert_eq!(kv("q='é x'"), vec![("q".into(), "é x".into())]);
    }

    #[test]
    fn refuses_what_pgbouncer_refuses() {
        for bad in ["host", "host=", "=x", "password='open", "a b=c", "user=''"] {
            assert!(pairs(bad).is_err(), "{bad}");
        }
    }
}
