//! The ini syntax of pgbouncer.ini, read as PgBouncer's loader reads it: sections in
//! brackets, `key = value` lines whose value runs to the end of the line (no inline
//! comments, no unquoting), `#`/`;` comment lines, quoted `'keys'`, and `%include FILE`
//! (at most 10 levels deep, the path taken as written). Pure: files come from a reader
//! closure, so tests need no disk.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// Include nesting PgBouncer allows.
const MAX_INCLUDE: usize = 10;

/// One item of an ini file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// File the item is in (an included file names itself).
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What it is.
    pub kind: Kind,
}

/// A section header or a key/value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `[name]`.
    Section(String),
    /// `key = value`.
    Pair {
        /// The key as written (quotes removed).
        key: String,
        /// The value, trailing white space removed.
        value: String,
    },
}

/// Reads a file for `%include` (and the top file).
pub type Reader<'a> = dyn FnMut(&Path) -> std::io::Result<String> + 'a;

/// An error at a line of a file.
pub fn at(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError::At {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Split `text` (the contents of `file`) into items, following `%include`s through `read`.
pub fn lex(file: &Path, text: &str, read: &mut Reader<'_>) -> Result<Vec<Item>, ConfigError> {
    let mut out = Vec::new();
    lex_into(file, text, read, 0, &mut out)?;
    Ok(out)
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_.-*".contains(&c)
}

fn lex_into(
    file: &Path,
    text: &str,
    read: &mut Reader<'_>,
    depth: usize,
    out: &mut Vec<Item>,
) -> Result<(), ConfigError> {
    let b = text.as_bytes();
    let line_of = |pos: usize| {
        b[..pos.min(b.len())]
            .iter()
            .filter(|c| **c == b'\n')
            .count()
            + 1
    };
    let eol = |pos: usize| memchr::memchr(b'\n', &b[pos..]).map_or(b.len(), |i| pos + i);
    let mut p = 0;
    loop {
        while p < b.len() && b[p].is_ascii_whitespace() {
            p += 1;
        }
        if p >= b.len() {
            return Ok(());
        }
        let line = line_of(p);
        if b[p..].starts_with(b"%include") && matches!(b.get(p + 8), Some(b' ' | b'\t')) {
            if depth >= MAX_INCLUDE {
                return Err(at(file, line, "include nesting level too deep"));
            }
            let end = eol(p);
            let name = text[p + 8..end].trim();
            let path = PathBuf::from(name);
            let inner = read(&path).map_err(|e| {
                at(
                    file,
                    line,
                    format!("could not load included file \"{name}\": {e}"),
                )
            })?;
            lex_into(&path, &inner, read, depth + 1, out)?;
            p = end;
            continue;
        }
        match b[p] {
            b'#' | b';' => {
                p = eol(p);
                continue;
            }
            b'[' => {
                let start = p + 1;
                let close = b[start..]
                    .iter()
                    .position(|c| *c == b']' || *c == b'\n')
                    .map(|i| start + i);
                match close {
                    Some(c) if b[c] == b']' => {
                        out.push(Item {
                            file: file.to_path_buf(),
                            line,
                            kind: Kind::Section(text[start..c].to_string()),
                        });
                        p = c + 1;
                        continue;
                    }
                    _ => return Err(at(file, line, "syntax error: unterminated section name")),
                }
            }
            _ => {}
        }
        let key = if b[p] == b'\'' {
            let start = p + 1;
            let close = b[start..].iter().position(|c| *c == b'\'');
            match close {
                Some(n) if n > 0 => {
                    p = start + n + 1;
                    &text[start..start + n]
                }
                _ => return Err(at(file, line, "syntax error: bad quoted key")),
            }
        } else {
            let start = p;
            while p < b.len() && is_key_char(b[p]) {
                p += 1;
            }
            &text[start..p]
        };
        while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
            p += 1;
        }
        if key.is_empty() || b.get(p) != Some(&b'=') {
            return Err(at(file, line, "syntax error: expected `key = value`"));
        }
        p += 1;
        while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
            p += 1;
        }
        let end = eol(p);
        out.push(Item {
            file: file.to_path_buf(),
            line,
            kind: Kind::Pair {
                key: key.to_string(),
                value: text[p..end].trim_end().to_string(),
            },
        });
        p = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(files: &[(&str, &str)]) -> Result<Vec<(String, usize, Kind)>, String> {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(n, t)| (PathBuf::from(n), t.to_string()))
            .collect();
        let mut read = |p: &Path| {
            map.get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        lex(Path::new(files[0].0), files[0].1, &mut read)
            .map(|v| {
                v.into_iter()
                    .map(|i| (i.file.display().to_string(), i.line, i.kind))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn pair(k: &str, v: &str) -> Kind {
        Kind::Pair {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn sections_pairs_comments_and_values_as_pgbouncer_reads_them() {
        let text = "; comment\n  # another\n[databases]\napp = host=db port=5433 ; not a comment\n'my db' =   dbname=x   \n\n[pgbouncer]\nlisten_port=6432\n[users] ; trailing\n";
        let got = run(&[("a.ini", text)]).unwrap();
        assert_eq!(
            got,
            vec![
                ("a.ini".into(), 3, Kind::Section("databases".into())),
                (
                    "a.ini".into(),
                    4,
                    pair("app", "host=db port=5433 ; not a comment")
                ),
                ("a.ini".into(), 5, pair("my db", "dbname=x")),
                ("a.ini".into(), 7, Kind::Section("pgbouncer".into())),
                ("a.ini".into(), 8, pair("listen_port", "6432")),
                ("a.ini".into(), 9, Kind::Section("users".into())),
            ]
        );
        let got = run(&[("a.ini", "[x]\nempty =\n")]).unwrap();
        assert_eq!(got[1].2, pair("empty", ""));
    }

    #[test]
    fn includes_nest_and_report_their_own_lines() {
        let got = run(&[
            (
                "main.ini",
                "[pgbouncer]\n%include more.ini\nlisten_port = 1\n",
            ),
            ("more.ini", "\n\nmax_client_conn = 5\n"),
        ])
        .unwrap();
        assert_eq!(got[1], ("more.ini".into(), 3, pair("max_client_conn", "5")));
        assert_eq!(got[2], ("main.ini".into(), 3, pair("listen_port", "1")));
        let e = run(&[("main.ini", "[pgbouncer]\n%include missing.ini\n")]).unwrap_err();
        assert!(
            e.starts_with("main.ini:2: ") && e.contains("missing.ini"),
            "{e}"
        );
        let e = run(&[("loop.ini", "%include loop.ini\n")]).unwrap_err();
        assert!(e.contains("too deep"), "{e}");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        for (text, line) in [
            ("[pgbouncer]\nlisten_port 6432\n", 2),
            ("[pgbouncer\nx=1\n", 1),
            ("\n\n\n'unterminated = 1\n", 4),
            ("[a]\n= 5\n", 2),
            ("[a]\nkey/x = 5\n", 2),
        ] {
            let e = run(&[("f.ini", text)]).unwrap_err();
            assert!(
                e.starts_with(&format!("f.ini:{line}: syntax error")),
                "{text:?}: {e}"
            );
        }
    }
}
