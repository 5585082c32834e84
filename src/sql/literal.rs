//! String constants: decoding every form Postgres accepts as a string constant (`'…'`, `E'…'`,
//! `$tag$…$tag$`, `U&'…' [UESCAPE 'c']`, newline-continued pieces) into bytes, and the
//! `22P06 nonstandard use of …` warnings raised when `standard_conforming_strings` is off.
//! A value Postgres would reject (bad escape, invalid UTF-8, NUL) decodes to `None`.

use super::lexer::{quote_continue, Form, Tok, Token};
use super::Notice;

const HINT_QUOTE: &str =
    "Use '' to write quotes in strings, or use the escape string syntax (E'...').";
const HINT_BACKSLASH: &str = "Use the escape string syntax for backslashes, e.g., E'\\\\'.";
const HINT_ESCAPE: &str = "Use the escape string syntax for escapes, e.g., E'\\r\\n'.";

/// A decoded string constant and the warning (at most one per constant) its lexing raised.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The value's bytes (valid UTF-8, no NUL).
    pub value: Vec<u8>,
    /// `WARNING 22P06`, for a `'…'` with backslash escapes while `standard_conforming_strings` is
    /// off. Its position is left for the caller to fill in.
    pub warning: Option<Notice>,
}

/// Decodes a string-constant token (`Tok::Str`); `None` for any other token or for a value
/// Postgres would reject.
pub(crate) fn decode(src: &str, t: &Token) -> Option<Decoded> {
    let bytes = src.as_bytes();
    let Tok::Str(form) = t.tok else { return None };
    let (value, warning) = match form {
        Form::Dollar { tag_len } => {
            let body = bytes.get(t.start + tag_len + 2..t.end.checked_sub(tag_len + 2)?)?;
            (body.to_vec(), None)
        }
        Form::Plain => pieces(bytes, t.start + 1, false, false)?,
        Form::Escape => pieces(bytes, t.start + 2, true, false)?,
        Form::Legacy => pieces(bytes, t.start + 1, true, true)?,
        Form::Unicode { esc, body_end } => {
            let (raw, _) = pieces(bytes.get(..body_end)?, t.start + 3, false, false)?;
            (unicode_unescape(&raw, esc)?, None)
        }
    };
    if value.contains(&0) || std::str::from_utf8(&value).is_err() {
        return None;
    }
    Some(Decoded { value, warning })
}

/// Reads the body starting at `i` up to the final closing quote, following continuations;
/// `''` is a quote; with `escapes`, backslash sequences are decoded; with `legacy`, the first
/// escape raises the 22P06 warning.
fn pieces(
    src: &[u8],
    mut i: usize,
    escapes: bool,
    legacy: bool,
) -> Option<(Vec<u8>, Option<Notice>)> {
    let mut warning = None;
    let mut warn_first = true;
    let mut out = Vec::new();
    let mut pending_high: Option<u32> = None;
    loop {
        let c = *src.get(i)?;
        if pending_high.is_some() && c != b'\\' {
            return None; // "invalid Unicode surrogate pair"
        }
        match c {
            b'\'' if src.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            b'\'' => match quote_continue(src, i) {
                Some(next) => i = next,
                None => break,
            },
            b'\\' if escapes => {
                let (used, kind) = escape(src, i, &mut out, &mut pending_high)?;
                if legacy && warn_first {
                    warning = Some(nonstandard(kind));
                }
                warn_first = false;
                i += used;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if pending_high.is_some() {
        return None;
    }
    Some((out, warning))
}

/// Which warning a backslash sequence raises in a legacy string.
#[derive(Clone, Copy)]
enum EscKind {
    Quote,
    Backslash,
    Other,
}

fn nonstandard(kind: EscKind) -> Notice {
    let (message, hint) = match kind {
        EscKind::Quote => ("nonstandard use of \\' in a string literal", HINT_QUOTE),
        EscKind::Backslash => (
            "nonstandard use of \\\\ in a string literal",
            HINT_BACKSLASH,
        ),
        EscKind::Other => ("nonstandard use of escape in a string literal", HINT_ESCAPE),
    };
    Notice {
        severity: "WARNING",
        sqlstate: "22P06",
        message: message.to_string(),
        hint: Some(hint),
        position: None,
    }
}

/// Decodes the backslash sequence at `i` into `out`; returns the bytes consumed and its kind.
fn escape(
    src: &[u8],
    i: usize,
    out: &mut Vec<u8>,
    pending_high: &mut Option<u32>,
) -> Option<(usize, EscKind)> {
    let at = |k: usize| src.get(k).copied().unwrap_or(0);
    let c = *src.get(i + 1)?;
    if let b'u' | b'U' = c {
        let n = if c == b'u' { 4 } else { 8 };
        let code = hex_value(src.get(i + 2..i + 2 + n)?)?;
        push_code(code, out, pending_high)?;
        return Some((2 + n, EscKind::Other));
    }
    if pending_high.is_some() {
        return None;
    }
    match c {
        b'0'..=b'7' => {
            let mut v: u32 = 0;
            let mut k = i + 1;
            while k < i + 4 && (b'0'..=b'7').contains(&at(k)) {
                v = v * 8 + u32::from(at(k) - b'0');
                k += 1;
            }
            out.push((v & 0xFF) as u8);
            Some((k - i, EscKind::Other))
        }
        b'x' if at(i + 2).is_ascii_hexdigit() => {
            let n = if at(i + 3).is_ascii_hexdigit() { 2 } else { 1 };
            out.push(hex_value(src.get(i + 2..i + 2 + n)?)? as u8);
            Some((2 + n, EscKind::Other))
        }
        _ => {
            let (byte, kind) = match c {
                b'b' => (0x08, EscKind::Other),
                b'f' => (0x0c, EscKind::Other),
                b'n' => (b'\n', EscKind::Other),
                b'r' => (b'\r', EscKind::Other),
                b't' => (b'\t', EscKind::Other),
                b'\'' => (b'\'', EscKind::Quote),
                b'\\' => (b'\\', EscKind::Backslash),
                other => (other, EscKind::Other),
            };
            out.push(byte);
            Some((2, kind))
        }
    }
}

/// Value of a run of hex digits, `None` if any is not one.
fn hex_value(digits: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &d in digits {
        v = v.checked_mul(16)? + (d as char).to_digit(16)?;
    }
    Some(v)
}

/// Appends the code point as UTF-8, pairing UTF-16 surrogates; `None` for invalid values.
fn push_code(code: u32, out: &mut Vec<u8>, pending_high: &mut Option<u32>) -> Option<()> {
    let cp = match (*pending_high, code) {
        (None, 0xD800..=0xDBFF) => {
            *pending_high = Some(code);
            return Some(());
        }
        (None, 0xDC00..=0xDFFF) => return None,
        (None, _) => code,
        (Some(high), 0xDC00..=0xDFFF) => {
            *pending_high = None;
            0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)
        }
        (Some(_), _) => return None,
    };
    if cp == 0 {
        return None;
    }
    let ch = char::from_u32(cp)?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    Some(())
}

/// Decodes `U&` escapes (`<esc>XXXX`, `<esc>+XXXXXX`, `<esc><esc>`) in an already de-quoted body.
pub(crate) fn unicode_unescape(body: &[u8], esc: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut pending_high = None;
    let mut i = 0;
    while i < body.len() {
        if body[i] != esc {
            if pending_high.is_some() {
                return None;
            }
            out.push(body[i]);
            i += 1;
            continue;
        }
        let hex4 = body
            .get(i + 1..i + 5)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let hex6 = body
            .get(i + 2..i + 8)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        if body.get(i + 1) == Some(&esc) && pending_high.is_none() {
            out.push(esc);
            i += 2;
        } else if let Some(h) = hex4 {
            push_code(hex_value(h)?, &mut out, &mut pending_high)?;
            i += 5;
        } else if let (Some(b'+'), Some(h)) = (body.get(i + 1), hex6) {
            push_code(hex_value(h)?, &mut out, &mut pending_high)?;
            i += 8;
        } else {
            return None;
        }
    }
    if pending_high.is_some() {
        return None;
    }
    Some(out)
}
