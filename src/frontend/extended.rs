//! The extended protocol's intercepted statements and portals: Parse of LISTEN/UNLISTEN/
//! NOTIFY/pg_notify/pg_listening_channels is answered by pgherald, and so are Bind,
//! Describe, Execute and Close that name them. Forwarded statements that control the
//! transaction are remembered so that their Execute carries its effect, and forwarded
//! statements calling `pg_listening_channels()` are rewritten to take the session's channels
//! as a hidden last parameter, supplied at each Bind (`listening.rs`).

use std::collections::{HashMap, HashSet};

use super::dealloc::Dropping;
use super::intercept::{Failure, Intercept};
use super::plan::{Effect, LocalReply};
use super::simple::effect;
use super::txn::ListenSet;
use crate::protocol::encoding::Conversion;
use crate::protocol::framer::cstr;
use crate::protocol::origin::Stage;
use crate::protocol::reply::TEXT_OID;
use crate::sql::{self, listening, Arg, Kind};

/// An intercepted prepared statement.
#[derive(Debug, Clone)]
pub enum Template {
    /// A statement with no parameters.
    Fixed(Intercept),
    /// `SELECT pg_notify(a, b)` where either argument may be a `$n` parameter.
    PgNotify {
        /// Channel argument.
        channel: Arg,
        /// Payload argument.
        payload: Arg,
    },
}

impl Template {
    fn params(&self) -> Vec<u32> {
        let n = match self {
            Template::Fixed(_) => 0,
            Template::PgNotify { channel, payload } => [channel, payload]
                .iter()
                .map(|a| match a {
                    Arg::Param(n) => *n as usize,
                    Arg::Literal(_) => 0,
                })
                .max()
                .unwrap_or(0),
        };
        vec![TEXT_OID; n]
    }

    fn column(&self) -> Option<crate::protocol::reply::Column> {
        match self {
            Template::Fixed(i) => i.column(),
            Template::PgNotify { .. } => Some(crate::protocol::reply::PG_NOTIFY_COLUMN),
        }
    }
}

/// A portal bound to an intercepted statement.
#[derive(Debug, Clone)]
pub struct Bound {
    action: Intercept,
    format: i16,
}

/// What pgherald does with one extended-protocol client message.
#[derive(Debug)]
pub enum Decision {
    /// Forward it; the server owes the reply described by the entry.
    Forward(super::plan::Entry),
    /// Answer it locally.
    Local(LocalReply),
    /// Forward this body instead of the client's (same message type); the server owes the
    /// reply described by the entry.
    Rewritten(Vec<u8>, super::plan::Entry),
    /// A message whose statement fails (Bind with a parameter the session's encoding rejects,
    /// Execute of a failing statement): make the server fail the batch too.
    Fail(Failure),
    /// Malformed message: FATAL 08P01.
    Malformed,
}

/// Intercepted statements and portals of one session.
#[derive(Debug, Default)]
pub struct Extended {
    stmts: HashMap<Vec<u8>, Template>,
    portals: HashMap<Vec<u8>, Bound>,
    stmt_effects: HashMap<Vec<u8>, Effect>,
    portal_effects: HashMap<Vec<u8>, Effect>,
    /// Forwarded statements rewritten to take the listen set as a last parameter.
    with_channels: HashSet<Vec<u8>>,
}

fn name_of(body: &[u8]) -> Option<(&[u8], &[u8])> {
    cstr(body)
}

impl Extended {
    /// Parse: intercept LISTEN & co., remember transaction control, forward the rest.
    /// The statement text is taken in the server encoding (`conv`); text pgherald cannot
    /// take that way is forwarded, for Postgres to answer.
    /// `DEALLOCATE name` is answered too when pgherald keeps `name` (its own intercepted
    /// statements, or those `owned` tells: `dealloc.rs`).
    pub fn parse(
        &mut self,
        body: &[u8],
        scs: bool,
        conv: Conversion,
        owned: &dyn Fn(&[u8]) -> bool,
    ) -> Decision {
        let Some((name, rest)) = name_of(body) else {
            return Decision::Malformed;
        };
        let Some((query, _)) = cstr(rest) else {
            return Decision::Malformed;
        };
        if !self.stmts.is_empty() {
            self.stmts.remove(name);
        }
        if !self.stmt_effects.is_empty() {
            self.stmt_effects.remove(name);
        }
        if !self.with_channels.is_empty() {
            self.with_channels.remove(name);
        }
        if sql::prefilter(query, true) {
            if let Some(text) = conv.statement_text(query) {
                let stmts: Vec<_> = sql::classify(&text, scs)
                    .into_iter()
                    .filter(|s| s.kind != Kind::Empty)
                    .collect();
                if let [only] = &stmts[..] {
                    let mine = |n: &[u8]| self.stmts.contains_key(n) || owned(n);
                    let template = match &only.kind {
                        Kind::PgNotify {
                            channel, payload, ..
                        } => Some(Template::PgNotify {
                            channel: channel.clone(),
                            payload: payload.clone(),
                        }),
                        // Stamped when executed (`dealloc::stamp`).
                        k => Dropping::new(&mine, 0).intercept(k).map(Template::Fixed),
                    };
                    if let Some(t) = template {
                        self.stmts.insert(name.to_vec(), t);
                        let mut notices = bytes::BytesMut::new();
                        super::simple::notices(&only.kind, conv, &mut notices);
                        return Decision::Local(LocalReply::Parse(
                            (!notices.is_empty()).then_some(notices),
                        ));
                    }
                    let e = effect(&only.kind);
                    if e != Effect::None {
                        self.stmt_effects.insert(name.to_vec(), e);
                    }
                    // The rewrite edits the client's bytes: only where they are the text itself.
                    let same = matches!(text, std::borrow::Cow::Borrowed(_));
                    if same && only.kind == Kind::Other && listening::mentions(query) {
                        let found = listening::calls(&text, only.range.clone(), scs);
                        let rewritten = (!found.calls.is_empty())
                            .then(|| super::listening::parse_body(body, &found))
                            .flatten();
                        if let Some((body, map)) = rewritten {
                            self.with_channels.insert(name.to_vec());
                            return Decision::Rewritten(
                                body,
                                super::plan::Entry::ParseRewritten(map),
                            );
                        }
                    }
                }
            }
        }
        Decision::Forward(super::plan::Entry::Parse)
    }

    /// Bind: resolve an intercepted statement's parameters into a portal. Parameter values
    /// are converted to the server encoding (`conv`), in order, as Postgres does at Bind; a
    /// statement rewritten to take the committed channels gets `listens` as its extra value.
    pub fn bind(&mut self, body: &[u8], conv: Conversion, listens: &ListenSet) -> Decision {
        let Some((portal, rest)) = name_of(body) else {
            return Decision::Malformed;
        };
        let Some((stmt, rest)) = cstr(rest) else {
            return Decision::Malformed;
        };
        if !self.portals.is_empty() {
            self.portals.remove(portal);
        }
        if !self.portal_effects.is_empty() {
            self.portal_effects.remove(portal);
        }
        let Some(template) = self.stmts.get(stmt) else {
            if let Some(e) = self.stmt_effects.get(stmt) {
                self.portal_effects.insert(portal.to_vec(), e.clone());
            }
            if !self.with_channels.is_empty() && self.with_channels.contains(stmt) {
                if let Some(b) = super::listening::bind_body(body, listens) {
                    return Decision::Rewritten(b, super::plan::Entry::Bind);
                }
            }
            return Decision::Forward(super::plan::Entry::Bind);
        };
        let Some((mut params, format)) = bind_values(rest) else {
            return Decision::Malformed;
        };
        for (i, p) in params.iter_mut().enumerate() {
            let Some(v) = p.as_mut() else { continue };
            match conv.parameter(v) {
                Ok(std::borrow::Cow::Borrowed(_)) => {}
                Ok(std::borrow::Cow::Owned(converted)) => *v = converted,
                Err(e) => {
                    let context = if portal.is_empty() {
                        format!("unnamed portal parameter ${}", i + 1)
                    } else {
                        format!(
                            "portal \"{}\" parameter ${}",
                            String::from_utf8_lossy(portal),
                            i + 1
                        )
                    };
                    return Decision::Fail(Failure::encoding(&e, Some(context)).at(Stage::Bind));
                }
            }
        }
        let resolve = |a: &Arg| -> Option<Vec<u8>> {
            match a {
                Arg::Literal(v) => v.clone(),
                Arg::Param(n) => params.get((*n as usize).wrapping_sub(1)).cloned().flatten(),
            }
        };
        let action = match template {
            Template::Fixed(i) => i.clone(),
            Template::PgNotify { channel, payload } => Intercept::PgNotify {
                channel: resolve(channel),
                payload: resolve(payload),
            },
        };
        self.portals
            .insert(portal.to_vec(), Bound { action, format });
        Decision::Local(LocalReply::Bind)
    }

    /// For a Bind too large to read whole: true (and the portal's bookkeeping done, as
    /// `bind` does) when the statement is forwarded unchanged, so the Bind may stream.
    pub fn forwards_bind(&mut self, portal: &[u8], stmt: &[u8]) -> bool {
        if self.stmts.contains_key(stmt) || self.with_channels.contains(stmt) {
            return false;
        }
        self.portals.remove(portal);
        self.portal_effects.remove(portal);
        if let Some(e) = self.stmt_effects.get(stmt) {
            self.portal_effects.insert(portal.to_vec(), e.clone());
        }
        true
    }

    /// Describe of a statement ('S') or portal ('P').
    pub fn describe(&self, body: &[u8]) -> Decision {
        let Some((&kind, rest)) = body.split_first() else {
            return Decision::Malformed;
        };
        let Some((name, _)) = cstr(rest) else {
            return Decision::Malformed;
        };
        match kind {
            b'S' => match self.stmts.get(name) {
                Some(t) => Decision::Local(LocalReply::DescribeStatement {
                    params: t.params(),
                    rows: t.column(),
                }),
                None if self.with_channels.contains(name) => {
                    Decision::Forward(super::plan::Entry::DescribeRewritten)
                }
                None => Decision::Forward(super::plan::Entry::DescribeStatement),
            },
            _ => match self.portals.get(name) {
                Some(b) => Decision::Local(LocalReply::DescribePortal {
                    rows: b.action.column(),
                    format: b.format,
                }),
                None => Decision::Forward(super::plan::Entry::DescribePortal),
            },
        }
    }

    /// Execute of a portal.
    pub fn execute(&self, body: &[u8]) -> Decision {
        let Some((portal, _)) = name_of(body) else {
            return Decision::Malformed;
        };
        match self.portals.get(portal) {
            Some(b) => match b.action.static_error() {
                Some(f) => Decision::Fail(f.at(Stage::Execute)),
                None => Decision::Local(LocalReply::Execute {
                    action: b.action.clone(),
                    format: b.format,
                }),
            },
            None => Decision::Forward(super::plan::Entry::Execute(
                self.portal_effects
                    .get(portal)
                    .cloned()
                    .unwrap_or(Effect::None),
            )),
        }
    }

    /// Close of a statement or portal.
    pub fn close(&mut self, body: &[u8]) -> Decision {
        let Some((&kind, rest)) = body.split_first() else {
            return Decision::Malformed;
        };
        let Some((name, _)) = cstr(rest) else {
            return Decision::Malformed;
        };
        let ours = match kind {
            b'S' => {
                self.stmt_effects.remove(name);
                self.with_channels.remove(name);
                self.stmts.remove(name).is_some()
            }
            _ => {
                self.portal_effects.remove(name);
                self.portals.remove(name).is_some()
            }
        };
        if ours {
            Decision::Local(LocalReply::Close)
        } else {
            Decision::Forward(super::plan::Entry::Close)
        }
    }

    /// True if statement `name` is one pgherald answers itself.
    pub fn intercepts(&self, name: &[u8]) -> bool {
        !self.stmts.is_empty() && self.stmts.contains_key(name)
    }

    /// `DEALLOCATE name`: forget what is known of statement `name`; true if it was one
    /// pgherald answers itself.
    pub fn forget(&mut self, name: &[u8]) -> bool {
        self.stmt_effects.remove(name);
        self.with_channels.remove(name);
        self.stmts.remove(name).is_some()
    }

    /// `DEALLOCATE ALL`: forget every named statement (the unnamed one and portals stay).
    pub fn forget_named(&mut self) {
        self.stmts.retain(|n, _| n.is_empty());
        self.stmt_effects.retain(|n, _| n.is_empty());
        self.with_channels.retain(|n| n.is_empty());
    }

    /// DISCARD ALL or a server reset dropped every statement and portal.
    pub fn clear(&mut self) {
        self.stmts.clear();
        self.portals.clear();
        self.stmt_effects.clear();
        self.portal_effects.clear();
        self.with_channels.clear();
    }
}

fn take_i16(b: &[u8]) -> Option<(i16, &[u8])> {
    Some((i16::from_be_bytes([*b.first()?, *b.get(1)?]), &b[2..]))
}

/// Parameter values (NULL = None) and the first result-column format of a Bind body
/// (after the portal and statement names).
fn bind_values(b: &[u8]) -> Option<(Vec<Option<Vec<u8>>>, i16)> {
    let (nfmt, mut b) = take_i16(b)?;
    for _ in 0..nfmt.max(0) {
        b = take_i16(b)?.1;
    }
    let (nparams, mut b2) = take_i16(b)?;
    let mut params = Vec::with_capacity(nparams.max(0) as usize);
    for _ in 0..nparams.max(0) {
        let len = i32::from_be_bytes(b2.get(..4)?.try_into().ok()?);
        b2 = &b2[4..];
        if len < 0 {
            params.push(None);
        } else {
            let len = len as usize;
            params.push(Some(b2.get(..len)?.to_vec()));
            b2 = &b2[len..];
        }
    }
    let (nres, b3) = take_i16(b2)?;
    let format = if nres > 0 { take_i16(b3)?.0 } else { 0 };
    Some((params, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Extended {
        fn bind_in(&mut self, body: &[u8]) -> Decision {
            self.bind(body, Conversion::Utf8, &ListenSet::new())
        }
    }

    #[test]
    fn listening_channels_calls_take_the_set_as_a_parameter() {
        let mut x = Extended::default();
        match x.parse(
            &parse_body("s", "SELECT count(*) FROM pg_listening_channels()"),
            true,
            Conversion::Utf8,
            &|_| false,
        ) {
            Decision::Rewritten(body, super::super::plan::Entry::ParseRewritten(_)) => {
                assert!(body.starts_with(b"s\0SELECT count(*) FROM unnest($1::text[])"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            x.describe(b"Ss\0"),
            Decision::Forward(super::super::plan::Entry::DescribeRewritten)
        ));
        assert!(matches!(
            x.bind_in(&bind_body("", "s", &[])),
            Decision::Rewritten(_, super::super::plan::Entry::Bind)
        ));
        assert!(matches!(x.close(b"Ss\0"), Decision::Forward(_)));
        assert!(matches!(
            x.bind_in(&bind_body("", "s", &[])),
            Decision::Forward(_)
        ));
        // The standalone forms stay pgherald's own.
        assert!(matches!(
            x.parse(
                &parse_body("t", "SELECT pg_listening_channels()"),
                true,
                Conversion::Utf8,
                &|_| false
            ),
            Decision::Local(_)
        ));
    }

    fn parse_body(name: &str, q: &str) -> Vec<u8> {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(q.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        b
    }

    fn bind_body(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
        let mut b = format!("{portal}\0{stmt}\0").into_bytes();
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
            }
        }
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b
    }

    #[test]
    fn pg_notify_with_parameters_is_intercepted() {
        let mut x = Extended::default();
        assert!(matches!(
            x.parse(
                &parse_body("s1", "SELECT pg_notify($1, $2)"),
                true,
                Conversion::Utf8,
                &|_| false
            ),
            Decision::Local(_)
        ));
        match x.describe(b"Ss1\0") {
            Decision::Local(LocalReply::DescribeStatement { params, rows }) => {
                assert_eq!(params, vec![25, 25]);
                assert_eq!(rows.unwrap().name, "pg_notify");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            x.bind(
                &bind_body("", "s1", &[Some("ch"), None]),
                Conversion::Utf8,
                &ListenSet::new()
            ),
            Decision::Local(_)
        ));
        match x.execute(b"\0\0\0\0\0") {
            Decision::Local(LocalReply::Execute { action, format }) => {
                assert_eq!(
                    action,
                    Intercept::PgNotify {
                        channel: Some(b"ch".to_vec()),
                        payload: None
                    }
                );
                assert_eq!(format, 1);
            }
            other => panic!("{other:?}"),
        }
        // A NULL channel fails at Execute (item 10).
        x.bind(
            &bind_body("p", "s1", &[None, Some("x")]),
            Conversion::Utf8,
            &ListenSet::new(),
        );
        assert!(matches!(x.execute(b"p\0\0\0\0\0"), Decision::Fail(_)));
    }

    #[test]
    fn bind_parameters_are_converted_or_fail_as_postgres() {
        use crate::protocol::encoding::SingleByte;
        let latin1 = Conversion::Single(SingleByte::Latin1);
        let mut x = Extended::default();
        x.parse(
            &parse_body("s", "SELECT pg_notify($1, $2)"),
            true,
            latin1,
            &|_| false,
        );
        let mut body = bind_body("", "s", &[Some("c"), Some("x")]);
        // The payload is the LATIN1 byte for "é".
        let at = body.len() - 5;
        body[at] = 0xe9;
        x.bind(&body, latin1, &ListenSet::new());
        match x.execute(b"\0\0\0\0\0") {
            Decision::Local(LocalReply::Execute { action, .. }) => assert_eq!(
                action,
                Intercept::PgNotify {
                    channel: Some(b"c".to_vec()),
                    payload: Some("é".as_bytes().to_vec())
                }
            ),
            other => panic!("{other:?}"),
        }
        body[at] = 0;
        match x.bind(&body, latin1, &ListenSet::new()) {
            Decision::Fail(f) => {
                assert_eq!(f.code, "22021");
                assert_eq!(
                    f.message,
                    "invalid byte sequence for encoding \"LATIN1\": 0x00"
                );
                assert_eq!(f.context.as_deref(), Some("unnamed portal parameter $2"));
            }
            other => panic!("{other:?}"),
        }
        let mut named = bind_body("p", "s", &[Some("\u{7f}"), None]);
        let at = named.len() - 9;
        named[at] = 0xff;
        match x.bind(&named, Conversion::Utf8, &ListenSet::new()) {
            Decision::Fail(f) => {
                assert_eq!(f.context.as_deref(), Some("portal \"p\" parameter $1"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forwarded_statements_keep_their_effects() {
        let mut x = Extended::default();
        assert!(matches!(
            x.parse(&parse_body("", "select 1"), true, Conversion::Utf8, &|_| {
                false
            }),
            Decision::Forward(_)
        ));
        assert!(matches!(
            x.parse(&parse_body("c", "COMMIT"), true, Conversion::Utf8, &|_| {
                false
            }),
            Decision::Forward(_)
        ));
        x.bind(
            &bind_body("", "c", &[]),
            Conversion::Utf8,
            &ListenSet::new(),
        );
        match x.execute(b"\0\0\0\0\0") {
            Decision::Forward(super::super::plan::Entry::Execute(Effect::Commit)) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(x.close(b"Sc\0"), Decision::Forward(_)));
    }
}
