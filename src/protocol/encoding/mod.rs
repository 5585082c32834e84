//! Postgres character encodings as pgherald converts them: encoding names (with the aliases
//! Postgres accepts), the conversion between a client's `client_encoding` and a UTF8
//! server encoding, and Postgres's errors for bytes that are invalid or have no equivalent.
//!
//! pgherald converts between UTF8 and the single-byte encodings (LATIN1..LATIN10,
//! ISO_8859_5..8, WIN866, WIN874, WIN1250..WIN1258, KOI8R, KOI8U). Their tables come from
//! `encoding_rs` where its WHATWG tables are Postgres's, adjusted where they are not:
//! LATIN1 is ISO-8859-1 (byte == code point, not windows-1252), LATIN5 is ISO-8859-9 (not
//! windows-1254), the code pages leave their undefined bytes unmapped (WHATWG maps them to C1
//! controls; WIN1255 also leaves 0xCA unmapped), and KOI8U is KOI8-U without the two KOI8-RU
//! letters. The integration test `d32_conversion_tables_match_postgres` checks every table
//! against a real server.
//!
//! It also converts between UTF8 and the multi-byte client encodings SJIS, EUC_JP, BIG5,
//! GBK, UHC, EUC_KR, GB18030, EUC_CN and JOHAB (see `multibyte`; checked exhaustively by
//! the integration test `encoding_multibyte`). Every other pair of encodings (EUC_TW,
//! EUC_JIS_2004, SHIFT_JIS_2004, MULE_INTERNAL, a server encoding other than UTF8 that
//! differs from the client's) is left unconverted: see [`Conversion::Unsupported`].

use std::borrow::Cow;
use std::sync::OnceLock;

mod multibyte;
mod multibyte_data;

pub use multibyte::{MultiByte, Seq, MULTI_BYTE};

/// An encoding error, as Postgres words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// SQLSTATE 22021: bytes that are not a character of their encoding (a NUL, broken UTF-8).
    #[error("invalid byte sequence for encoding \"{encoding}\": {}", hex(bytes))]
    Invalid {
        /// Postgres's name of the encoding.
        encoding: &'static str,
        /// The offending character's bytes, as Postgres shows them.
        bytes: Vec<u8>,
    },
    /// SQLSTATE 22P05: a character that the target encoding cannot represent.
    #[error(
        "character with byte sequence {} in encoding \"{from}\" has no equivalent in encoding \"{to}\"",
        hex(bytes)
    )]
    Untranslatable {
        /// Source encoding.
        from: &'static str,
        /// Target encoding.
        to: &'static str,
        /// The character's bytes in the source encoding.
        bytes: Vec<u8>,
    },
}

impl EncodingError {
    /// The error's SQLSTATE.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EncodingError::Invalid { .. } => "22021",
            EncodingError::Untranslatable { .. } => "22P05",
        }
    }
}

/// `0xe4 0xb8 0xad`.
fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    parts.join(" ")
}

/// A single-byte encoding pgherald converts exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleByte {
    /// LATIN1 (ISO-8859-1).
    Latin1,
    /// LATIN2 (ISO-8859-2).
    Latin2,
    /// LATIN3 (ISO-8859-3).
    Latin3,
    /// LATIN4 (ISO-8859-4).
    Latin4,
    /// LATIN5 (ISO-8859-9).
    Latin5,
    /// LATIN6 (ISO-8859-10).
    Latin6,
    /// LATIN7 (ISO-8859-13).
    Latin7,
    /// LATIN8 (ISO-8859-14).
    Latin8,
    /// LATIN9 (ISO-8859-15).
    Latin9,
    /// LATIN10 (ISO-8859-16).
    Latin10,
    /// ISO_8859_5 (Cyrillic).
    Iso8859_5,
    /// ISO_8859_6 (Arabic).
    Iso8859_6,
    /// ISO_8859_7 (Greek).
    Iso8859_7,
    /// ISO_8859_8 (Hebrew).
    Iso8859_8,
    /// WIN866 (DOS Cyrillic).
    Win866,
    /// WIN874 (Thai).
    Win874,
    /// WIN1250 (Central European).
    Win1250,
    /// WIN1251 (Cyrillic).
    Win1251,
    /// WIN1252 (Western European).
    Win1252,
    /// WIN1253 (Greek).
    Win1253,
    /// WIN1254 (Turkish).
    Win1254,
    /// WIN1255 (Hebrew).
    Win1255,
    /// WIN1256 (Arabic).
    Win1256,
    /// WIN1257 (Baltic).
    Win1257,
    /// WIN1258 (Vietnamese).
    Win1258,
    /// KOI8R.
    Koi8r,
    /// KOI8U.
    Koi8u,
}

/// Every single-byte encoding, in `SingleByte` order.
pub const SINGLE_BYTE: [SingleByte; 27] = {
    use SingleByte::*;
    [
        Latin1, Latin2, Latin3, Latin4, Latin5, Latin6, Latin7, Latin8, Latin9, Latin10, Iso8859_5,
        Iso8859_6, Iso8859_7, Iso8859_8, Win866, Win874, Win1250, Win1251, Win1252, Win1253,
        Win1254, Win1255, Win1256, Win1257, Win1258, Koi8r, Koi8u,
    ]
};

/// Where a single-byte table comes from.
enum Source {
    /// Byte == code point (LATIN1).
    Identity,
    /// The WHATWG table as it is.
    Whatwg(&'static encoding_rs::Encoding),
    /// A code page: bytes WHATWG maps to C1 controls are undefined in Postgres, and so are
    /// the bytes listed (WIN1255's 0xCA).
    CodePage(&'static encoding_rs::Encoding, &'static [u8]),
    /// An ISO-8859 part WHATWG replaces by its code page: C1 controls at 0x80..0x9F, the
    /// code page above (LATIN5).
    IsoOverCodePage(&'static encoding_rs::Encoding),
    /// KOI8-U: WHATWG's KOI8-U except 0xAE and 0xBE, which are KOI8-R's box drawings.
    Koi8u,
}

/// The upper half (0x80..=0xFF) of a single-byte encoding, both ways.
struct Table {
    /// Byte `0x80 + i` → character, None where the byte has no mapping.
    decode: [Option<char>; 128],
    /// (character, byte), sorted by character.
    encode: Vec<(char, u8)>,
}

impl SingleByte {
    /// Postgres's name of the encoding.
    pub fn name(self) -> &'static str {
        use SingleByte::*;
        match self {
            Latin1 => "LATIN1",
            Latin2 => "LATIN2",
            Latin3 => "LATIN3",
            Latin4 => "LATIN4",
            Latin5 => "LATIN5",
            Latin6 => "LATIN6",
            Latin7 => "LATIN7",
            Latin8 => "LATIN8",
            Latin9 => "LATIN9",
            Latin10 => "LATIN10",
            Iso8859_5 => "ISO_8859_5",
            Iso8859_6 => "ISO_8859_6",
            Iso8859_7 => "ISO_8859_7",
            Iso8859_8 => "ISO_8859_8",
            Win866 => "WIN866",
            Win874 => "WIN874",
            Win1250 => "WIN1250",
            Win1251 => "WIN1251",
            Win1252 => "WIN1252",
            Win1253 => "WIN1253",
            Win1254 => "WIN1254",
            Win1255 => "WIN1255",
            Win1256 => "WIN1256",
            Win1257 => "WIN1257",
            Win1258 => "WIN1258",
            Koi8r => "KOI8R",
            Koi8u => "KOI8U",
        }
    }

    fn source(self) -> Source {
        use encoding_rs as e;
        use SingleByte::*;
        match self {
            Latin1 => Source::Identity,
            Latin2 => Source::Whatwg(e::ISO_8859_2),
            Latin3 => Source::Whatwg(e::ISO_8859_3),
            Latin4 => Source::Whatwg(e::ISO_8859_4),
            Latin5 => Source::IsoOverCodePage(e::WINDOWS_1254),
            Latin6 => Source::Whatwg(e::ISO_8859_10),
            Latin7 => Source::Whatwg(e::ISO_8859_13),
            Latin8 => Source::Whatwg(e::ISO_8859_14),
            Latin9 => Source::Whatwg(e::ISO_8859_15),
            Latin10 => Source::Whatwg(e::ISO_8859_16),
            Iso8859_5 => Source::Whatwg(e::ISO_8859_5),
            Iso8859_6 => Source::Whatwg(e::ISO_8859_6),
            Iso8859_7 => Source::Whatwg(e::ISO_8859_7),
            Iso8859_8 => Source::Whatwg(e::ISO_8859_8),
            Win866 => Source::Whatwg(e::IBM866),
            Win874 => Source::CodePage(e::WINDOWS_874, &[]),
            Win1250 => Source::CodePage(e::WINDOWS_1250, &[]),
            Win1251 => Source::CodePage(e::WINDOWS_1251, &[]),
            Win1252 => Source::CodePage(e::WINDOWS_1252, &[]),
            Win1253 => Source::CodePage(e::WINDOWS_1253, &[]),
            Win1254 => Source::CodePage(e::WINDOWS_1254, &[]),
            Win1255 => Source::CodePage(e::WINDOWS_1255, &[0xca]),
            Win1256 => Source::CodePage(e::WINDOWS_1256, &[]),
            Win1257 => Source::CodePage(e::WINDOWS_1257, &[]),
            Win1258 => Source::CodePage(e::WINDOWS_1258, &[]),
            Koi8r => Source::Whatwg(e::KOI8_R),
            Koi8u => Source::Koi8u,
        }
    }

    fn table(self) -> &'static Table {
        static TABLES: [OnceLock<Table>; 27] = [const { OnceLock::new() }; 27];
        TABLES[self as usize].get_or_init(|| build(self.source()))
    }

    /// The character byte `b` stands for; None for a byte without mapping.
    pub fn decode_byte(self, b: u8) -> Option<char> {
        if b < 0x80 {
            return Some(char::from(b));
        }
        if self == SingleByte::Latin1 {
            return Some(char::from(b));
        }
        self.table().decode[usize::from(b - 0x80)]
    }

    /// The byte for character `c`; None when the encoding cannot represent it.
    pub fn encode_char(self, c: char) -> Option<u8> {
        if c.is_ascii() {
            return u8::try_from(c).ok();
        }
        if self == SingleByte::Latin1 {
            return u8::try_from(c).ok();
        }
        let t = &self.table().encode;
        t.binary_search_by_key(&c, |(ch, _)| *ch)
            .ok()
            .map(|i| t[i].1)
    }
}

/// The character WHATWG's table gives one byte, if any.
fn whatwg_byte(enc: &'static encoding_rs::Encoding, b: u8) -> Option<char> {
    let bytes = [b];
    let s = enc.decode_without_bom_handling_and_without_replacement(&bytes)?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

fn build(source: Source) -> Table {
    let mut decode = [None; 128];
    for (i, slot) in decode.iter_mut().enumerate() {
        let b = 0x80 + i as u8;
        *slot = match &source {
            Source::Identity => Some(char::from(b)),
            Source::Whatwg(e) => whatwg_byte(e, b),
            Source::CodePage(_, undefined) if undefined.contains(&b) => None,
            Source::CodePage(e, _) => whatwg_byte(e, b).filter(|c| !is_c1(*c)),
            Source::IsoOverCodePage(e) if b < 0xa0 => Some(char::from(b)),
            Source::IsoOverCodePage(e) => whatwg_byte(e, b),
            Source::Koi8u if b == 0xae || b == 0xbe => whatwg_byte(encoding_rs::KOI8_R, b),
            Source::Koi8u => whatwg_byte(encoding_rs::KOI8_U, b),
        };
    }
    let mut encode: Vec<(char, u8)> = decode
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (c, 0x80 + i as u8)))
        .collect();
    encode.sort_unstable();
    Table { decode, encode }
}

/// A Postgres encoding, by what pgherald can do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// SQL_ASCII: bytes without meaning; Postgres converts nothing.
    SqlAscii,
    /// UTF8.
    Utf8,
    /// A single-byte encoding pgherald converts.
    Single(SingleByte),
    /// A multi-byte encoding pgherald converts.
    Multi(MultiByte),
    /// An encoding pgherald does not convert (EUC_TW, EUC_JIS_2004, SHIFT_JIS_2004,
    /// MULE_INTERNAL);
    /// Postgres's name for it.
    Other(&'static str),
}

/// Postgres's names (lower case, alphanumerics only) and aliases of every encoding.
const NAMES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

impl Encoding {
    /// The encoding a name denotes, as Postgres reads encoding names: case-insensitive,
    /// punctuation and spaces ignored (`ISO-8859-1`, `latin1` and `Latin 1` are LATIN1),
    /// aliases included. None for a name Postgres does not know.
    pub fn from_name(name: &str) -> Option<Encoding> {
        let key: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let canonical = NAMES.iter().find(|(k, _)| *k == key)?.1;
        Some(match canonical {
            "SQL_ASCII" => Encoding::SqlAscii,
            "UTF8" => Encoding::Utf8,
            other => match SINGLE_BYTE.iter().find(|s| s.name() == other) {
                Some(s) => Encoding::Single(*s),
                None => match MULTI_BYTE.iter().find(|m| m.name() == other) {
                    Some(m) => Encoding::Multi(*m),
                    None => Encoding::Other(canonical),
                },
            },
        })
    }

    /// Postgres's name of the encoding.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::SqlAscii => "SQL_ASCII",
            Encoding::Utf8 => "UTF8",
            Encoding::Single(s) => s.name(),
            Encoding::Multi(m) => m.name(),
            Encoding::Other(n) => n,
        }
    }
}

/// How text travels between a session's client encoding and the server encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conversion {
    /// A UTF8 client and a UTF8 (or SQL_ASCII) server: bytes travel unchanged, and what
    /// pgherald takes from the client must be valid UTF-8, as Postgres checks it.
    #[default]
    Utf8,
    /// Bytes travel unchanged and unchecked: the same non-UTF8 encoding on both sides, or a
    /// SQL_ASCII server.
    Same,
    /// A single-byte client encoding and a UTF8 server: converted both ways.
    Single(SingleByte),
    /// A multi-byte client encoding and a UTF8 server: converted both ways.
    Multi(MultiByte),
    /// An encoding pair pgherald cannot convert: only ASCII statement text is taken from
    /// the client (anything else goes to Postgres), and nothing else is converted.
    Unsupported,
}

impl Conversion {
    /// The conversion for a client_encoding and a server_encoding, by name. A missing or
    /// unknown name counts as UTF8.
    pub fn new(client: Option<&str>, server: Option<&str>) -> Conversion {
        let get = |n: Option<&str>| n.and_then(Encoding::from_name).unwrap_or(Encoding::Utf8);
        match (get(client), get(server)) {
            (Encoding::Utf8, Encoding::Utf8 | Encoding::SqlAscii) => Conversion::Utf8,
            (c, s) if c == s => Conversion::Same,
            (_, Encoding::SqlAscii) => Conversion::Same,
            (Encoding::Single(c), Encoding::Utf8) => Conversion::Single(c),
            (Encoding::Multi(c), Encoding::Utf8) => Conversion::Multi(c),
            _ => Conversion::Unsupported,
        }
    }

    /// The text of a Query or Parse, in the server encoding, for pgherald to classify;
    /// None when pgherald must leave the statement to Postgres (bytes it cannot take:
    /// Postgres then answers with its own error, or runs the statement itself).
    pub fn statement_text(self, b: &[u8]) -> Option<Cow<'_, str>> {
        match self {
            Conversion::Utf8 | Conversion::Same => std::str::from_utf8(b).ok().map(Cow::Borrowed),
            Conversion::Single(s) => decode(s, b).ok(),
            Conversion::Multi(m) => multibyte::decode(m, b).ok(),
            Conversion::Unsupported => b
                .is_ascii()
                .then(|| std::str::from_utf8(b).ok().map(Cow::Borrowed))
                .flatten(),
        }
    }

    /// A text parameter value (Bind) in the server encoding, or Postgres's error for it.
    /// `Same` and `Unsupported` pass the bytes through unchecked.
    pub fn parameter(self, b: &[u8]) -> Result<Cow<'_, [u8]>, EncodingError> {
        match self {
            Conversion::Utf8 => validate_utf8(b).map(|()| Cow::Borrowed(b)),
            Conversion::Same | Conversion::Unsupported => Ok(Cow::Borrowed(b)),
            Conversion::Single(s) => decode(s, b).map(text_bytes),
            Conversion::Multi(m) => multibyte::decode(m, b).map(text_bytes),
        }
    }

    /// Text from the server encoding to the client's, or Postgres's error when the client's
    /// encoding has no equivalent for a character.
    pub fn to_client(self, b: &[u8]) -> Result<Cow<'_, [u8]>, EncodingError> {
        match self {
            Conversion::Single(s) => encode(s, b),
            Conversion::Multi(m) => multibyte::encode(m, b),
            _ => Ok(Cow::Borrowed(b)),
        }
    }

    /// True when what goes to the client is written unchanged (the fast path).
    pub fn passes_through(self) -> bool {
        !matches!(self, Conversion::Single(_) | Conversion::Multi(_))
    }
}

fn text_bytes(t: Cow<'_, str>) -> Cow<'_, [u8]> {
    match t {
        Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
        Cow::Owned(t) => Cow::Owned(t.into_bytes()),
    }
}

/// Bytes Postgres counts as one character from UTF-8 lead byte `b` (for error messages).
fn utf8_len(b: u8) -> usize {
    match b {
        _ if b & 0x80 == 0 => 1,
        _ if b & 0xe0 == 0xc0 => 2,
        _ if b & 0xf0 == 0xe0 => 3,
        _ if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    }
}

/// The bytes an error shows for the character starting at `at`: as many as its lead byte
/// announces, within the string, at most 8.
fn shown(b: &[u8], at: usize) -> Vec<u8> {
    let n = utf8_len(b[at]).min(b.len() - at).min(8);
    b[at..at + n].to_vec()
}

/// Check UTF-8 as Postgres does (a NUL is invalid too).
pub fn validate_utf8(b: &[u8]) -> Result<(), EncodingError> {
    let bad = match std::str::from_utf8(b) {
        Ok(_) => None,
        Err(e) => Some(e.valid_up_to()),
    };
    let nul = memchr::memchr(0, &b[..bad.unwrap_or(b.len())]);
    match nul.or(bad) {
        None => Ok(()),
        Some(at) => Err(EncodingError::Invalid {
            encoding: "UTF8",
            bytes: shown(b, at),
        }),
    }
}

/// Single-byte text to UTF-8.
fn decode(s: SingleByte, b: &[u8]) -> Result<Cow<'_, str>, EncodingError> {
    if b.is_ascii() && !b.contains(&0) {
        // Pure ASCII: the same bytes are the UTF-8 text.
        if let Ok(t) = std::str::from_utf8(b) {
            return Ok(Cow::Borrowed(t));
        }
    }
    let mut out = String::with_capacity(b.len() + b.len() / 2);
    for &c in b {
        if c == 0 {
            return Err(EncodingError::Invalid {
                encoding: s.name(),
                bytes: vec![0],
            });
        }
        match s.decode_byte(c) {
            Some(ch) => out.push(ch),
            None => {
                return Err(EncodingError::Untranslatable {
                    from: s.name(),
                    to: "UTF8",
                    bytes: vec![c],
                })
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// UTF-8 text (from the server) to a single-byte encoding.
fn encode(s: SingleByte, b: &[u8]) -> Result<Cow<'_, [u8]>, EncodingError> {
    from_utf8_with(b, s.name(), |ch, out| {
        s.encode_char(ch).map(|c| out.push(c))
    })
}

/// UTF-8 text (from the server) to the encoding named `to`, one character at a time with
/// `put` (None: no equivalent, Postgres's 22P05). Pure ASCII is borrowed unchanged.
fn from_utf8_with<'a>(
    b: &'a [u8],
    to: &'static str,
    mut put: impl FnMut(char, &mut Vec<u8>) -> Option<()>,
) -> Result<Cow<'a, [u8]>, EncodingError> {
    if b.is_ascii() {
        return Ok(Cow::Borrowed(b));
    }
    let text = std::str::from_utf8(b).map_err(|e| EncodingError::Invalid {
        encoding: "UTF8",
        bytes: shown(b, e.valid_up_to()),
    })?;
    let mut out = Vec::with_capacity(b.len());
    for (at, ch) in text.char_indices() {
        if put(ch, &mut out).is_none() {
            return Err(EncodingError::Untranslatable {
                from: "UTF8",
                to,
                bytes: shown(b, at),
            });
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests;
