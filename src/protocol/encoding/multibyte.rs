//! The multi-byte client encodings pgherald converts to and from a UTF8 server (SJIS,
//! EUC_JP, BIG5, GBK, UHC, EUC_KR, GB18030, EUC_CN, JOHAB): which byte sequences Postgres
//! takes as characters, its tables (`encoding_rs`'s, corrected by `multibyte_data`; JOHAB's
//! are computed: Hangul syllables from their jamo, symbols and Hanja from EUC_KR's KS X 1001
//! rows), and the conversion of whole strings with Postgres's errors.
//!
//! Postgres converts a client's text character by character and stops at the first
//! character that is invalid (22021, showing as many bytes as the lead byte announces) or
//! has no equivalent (22P05). Its validity rules, measured on PostgreSQL 15:
//! - SJIS: 0xA1..0xDF alone; lead 0x81..0x9F or 0xE0..0xFC, trail 0x40..0x7E or 0x80..0xFC.
//! - EUC_JP: 0x8E + 0xA1..0xDF; 0x8F + two of 0xA1..0xFE; two of 0xA1..0xFE.
//! - EUC_KR, EUC_CN: two of 0xA1..0xFE (0x8F announces three bytes, as 0x8E does in
//!   EUC_CN; all invalid).
//! - BIG5, GBK, UHC: any high byte and a non-NUL trail, except 0x8D 0x20.
//! - GB18030: lead 0x81..0xFE, trail 0x40..0x7E or 0x80..0xFE, or four bytes
//!   0x81..0xFE 0x30..0x39 0x81..0xFE 0x30..0x39.
//! - JOHAB: a high lead other than 0x8F and a trail of 0xA1..0xFE (so Postgres takes only
//!   part of what it writes); 0x8F + two of 0xA1..0xFE, none of them mapped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::multibyte_data as data;
use super::EncodingError;

/// A multi-byte client encoding pgherald converts exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiByte {
    /// SJIS (Postgres's Shift JIS, Microsoft's code page 932 variant).
    Sjis,
    /// EUC_JP.
    EucJp,
    /// BIG5.
    Big5,
    /// GBK.
    Gbk,
    /// UHC (code page 949).
    Uhc,
    /// EUC_KR.
    EucKr,
    /// GB18030.
    Gb18030,
    /// EUC_CN (GB2312).
    EucCn,
    /// JOHAB.
    Johab,
}

/// Every multi-byte encoding pgherald converts, in `MultiByte` order.
pub const MULTI_BYTE: [MultiByte; 9] = {
    use MultiByte::*;
    [Sjis, EucJp, Big5, Gbk, Uhc, EucKr, Gb18030, EucCn, Johab]
};

/// A character's bytes in a multi-byte encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq {
    bytes: [u8; 4],
    len: usize,
}

impl Seq {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[4 - self.len..]
    }

    fn packed(v: u32) -> Seq {
        let len = match v {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xff_ffff => 3,
            _ => 4,
        };
        Seq {
            bytes: v.to_be_bytes(),
            len,
        }
    }
}

/// A sequence as a big-endian number.
fn pack(b: &[u8]) -> u32 {
    b.iter().fold(0, |a, &x| a << 8 | u32::from(x))
}

fn within(x: u8, lo: u8, hi: u8) -> bool {
    (lo..=hi).contains(&x)
}

/// The one character `enc` decodes `s` to, if any.
fn base_char(enc: &'static encoding_rs::Encoding, s: &[u8]) -> Option<char> {
    let mut d = enc.new_decoder_without_bom_handling();
    let mut buf = [0u8; 16];
    let (res, read, written) = d.decode_to_utf8_without_replacement(s, &mut buf, true);
    if res != encoding_rs::DecoderResult::InputEmpty || read != s.len() {
        return None;
    }
    let text = std::str::from_utf8(&buf[..written]).ok()?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// The sequence `enc` encodes `c` to, if any.
fn base_seq(enc: &'static encoding_rs::Encoding, c: char) -> Option<u32> {
    let mut e = enc.new_encoder();
    let mut tmp = [0u8; 4];
    let mut out = [0u8; 16];
    let src = c.encode_utf8(&mut tmp);
    let (res, _, written) = e.encode_from_utf8_without_replacement(src, &mut out, true);
    (res == encoding_rs::EncoderResult::InputEmpty && written > 0).then(|| pack(&out[..written]))
}

/// JOHAB's character for two bytes, whether or not Postgres reads them (it writes them).
fn johab_char(s: &[u8]) -> Option<char> {
    let &[a, b] = s else { return None };
    match a {
        0x84..=0xd3 => {
            let x = u32::from(a) << 8 | u32::from(b);
            let (i, m, f) = ((x >> 10) & 31, (x >> 5) & 31, x & 31);
            let v = match m {
                3..=7 => m - 3,
                10..=15 => m - 5,
                18..=23 => m - 7,
                26..=29 => m - 9,
                _ => return None,
            };
            let t = match f {
                1..=17 => f - 1,
                19..=29 => f - 2,
                _ => return None,
            };
            if !(2..=20).contains(&i) {
                return None;
            }
            char::from_u32(0xac00 + ((i - 2) * 21 + v) * 28 + t)
        }
        0xd9..=0xde | 0xe0..=0xf9 => {
            // Two KS X 1001 rows per lead byte.
            let first = if a <= 0xde {
                0x21 + 2 * (a - 0xd9)
            } else {
                0x4a + 2 * (a - 0xe0)
            };
            let (row, col) = match b {
                0x31..=0x7e => (first, 0x21 + b - 0x31),
                0x91..=0xa0 => (first, 0x6f + b - 0x91),
                0xa1..=0xfe => (first + 1, b - 0x80),
                _ => return None,
            };
            MultiByte::EucKr.decode_char(&[row | 0x80, col | 0x80])
        }
        _ => None,
    }
}

/// One encoding's characters both ways (sequences as big-endian numbers). GB18030's
/// four-byte sequences are not here: they are `encoding_rs`'s, with `Fix` applied.
struct Tables {
    decode: HashMap<u32, char>,
    /// 0: no equivalent (where the base table has one).
    encode: HashMap<char, u32>,
}

impl MultiByte {
    /// Postgres's name of the encoding.
    pub fn name(self) -> &'static str {
        use MultiByte::*;
        match self {
            Sjis => "SJIS",
            EucJp => "EUC_JP",
            Big5 => "BIG5",
            Gbk => "GBK",
            Uhc => "UHC",
            EucKr => "EUC_KR",
            Gb18030 => "GB18030",
            EucCn => "EUC_CN",
            Johab => "JOHAB",
        }
    }

    fn base(self) -> &'static encoding_rs::Encoding {
        use encoding_rs as e;
        use MultiByte::*;
        match self {
            Sjis => e::SHIFT_JIS,
            EucJp => e::EUC_JP,
            Big5 => e::BIG5,
            Gbk | EucCn => e::GBK,
            Uhc | EucKr | Johab => e::EUC_KR,
            Gb18030 => e::GB18030,
        }
    }

    /// The base table's character for `s`, before `Fix`.
    fn base_char(self, s: &[u8]) -> Option<char> {
        match self {
            MultiByte::Johab => johab_char(s),
            _ => base_char(self.base(), s),
        }
    }

    fn fix(self) -> &'static data::Fix {
        use MultiByte::*;
        match self {
            Sjis => &data::SJIS,
            EucJp => &data::EUC_JP,
            Big5 => &data::BIG5,
            Gbk => &data::GBK,
            Uhc => &data::UHC,
            EucKr => &data::EUC_KR,
            Gb18030 => &data::GB18030,
            EucCn => &data::EUC_CN,
            Johab => &data::JOHAB,
        }
    }

    /// How many bytes Postgres takes for the character whose lead byte (not ASCII) starts
    /// `b`, whether or not they are valid.
    fn announced(self, b: &[u8]) -> usize {
        use MultiByte::*;
        match self {
            Sjis if within(b[0], 0xa1, 0xdf) => 1,
            EucJp | EucKr | EucCn | Johab if b[0] == 0x8f => 3,
            EucCn if b[0] == 0x8e => 3,
            Gb18030 if b.len() > 1 && within(b[1], 0x30, 0x39) => 4,
            _ => 2,
        }
    }

    /// True when `s` (1 to 3 bytes, the first not ASCII) is a character of the encoding.
    fn valid(self, s: &[u8]) -> bool {
        use MultiByte::*;
        match (self, s) {
            (Sjis, [a]) => within(*a, 0xa1, 0xdf),
            (Sjis, [a, b]) => {
                (within(*a, 0x81, 0x9f) || within(*a, 0xe0, 0xfc))
                    && (within(*b, 0x40, 0x7e) || within(*b, 0x80, 0xfc))
            }
            (EucJp, [0x8e, b]) => within(*b, 0xa1, 0xdf),
            (EucJp, [0x8f, a, b]) => within(*a, 0xa1, 0xfe) && within(*b, 0xa1, 0xfe),
            (EucJp | EucKr | EucCn, [a, b]) => within(*a, 0xa1, 0xfe) && within(*b, 0xa1, 0xfe),
            (Big5 | Gbk | Uhc, [a, b]) => *a >= 0x80 && *b != 0 && (*a, *b) != (0x8d, 0x20),
            (Gb18030, [a, b]) => {
                within(*a, 0x81, 0xfe) && (within(*b, 0x40, 0x7e) || within(*b, 0x80, 0xfe))
            }
            (Johab, [0x8f, a, b]) => within(*a, 0xa1, 0xfe) && within(*b, 0xa1, 0xfe),
            (Johab, [a, b]) => *a >= 0x80 && *a != 0x8f && within(*b, 0xa1, 0xfe),
            (Gb18030, [a, _, c, d]) => {
                within(*a, 0x81, 0xfe) && within(*c, 0x81, 0xfe) && within(*d, 0x30, 0x39)
            }
            _ => false,
        }
    }

    /// The length of the character starting `b` (whose first byte is not ASCII), or, for
    /// an invalid one, how many bytes Postgres's error shows.
    pub fn char_len(self, b: &[u8]) -> Result<usize, usize> {
        let n = self.announced(b);
        if b.len() < n {
            return Err(b.len());
        }
        if self.valid(&b[..n]) {
            Ok(n)
        } else {
            Err(n)
        }
    }

    fn tables(self) -> &'static Tables {
        static TABLES: [OnceLock<Tables>; 9] = [const { OnceLock::new() }; 9];
        TABLES[self as usize].get_or_init(|| self.build())
    }

    fn build(self) -> Tables {
        // Every sequence of one or two bytes, and of three where 0x8F leads some.
        let mut seqs: Vec<u32> = (0x80..=0xff).chain(0x8000..=0xffff).collect();
        if matches!(self, MultiByte::EucJp | MultiByte::Johab) {
            seqs.extend(0x8f_a1a1..=0x8f_fefe);
        }
        // What Postgres writes: JOHAB writes characters it does not read.
        let written = |s: &[u8]| self.valid(s) || (self == MultiByte::Johab && s.len() == 2);
        let mut decode = HashMap::new();
        for s in seqs {
            let bytes = Seq::packed(s);
            if !written(bytes.as_bytes()) {
                continue;
            }
            if let Some(c) = self.base_char(bytes.as_bytes()) {
                decode.insert(s, c);
            }
        }
        for &(first, last, cp) in self.fix().decode.iter().filter(|f| f.0 <= 0xff_ffff) {
            if cp == 0 {
                // Unmapped ranges can span many numbers (from two bytes to three).
                decode.retain(|s, _| !(first..=last).contains(s));
                continue;
            }
            for s in first..=last {
                let bytes = Seq::packed(s);
                if let Some(c) = char::from_u32(cp + (s - first)) {
                    if self.valid(bytes.as_bytes()) {
                        decode.insert(s, c);
                    }
                }
            }
        }
        let mut pairs: Vec<(u32, char)> = decode.iter().map(|(s, c)| (*s, *c)).collect();
        pairs.sort_unstable();
        // Where several sequences decode to one character, Postgres writes SJIS's last
        // and the other encodings' first.
        if self == MultiByte::Sjis {
            pairs.reverse();
        }
        let mut encode = HashMap::new();
        for (s, c) in pairs {
            encode.entry(c).or_insert(s);
        }
        for &(cp, s) in self.fix().encode {
            if let Some(c) = char::from_u32(cp) {
                encode.insert(c, s);
            }
        }
        decode.retain(|&s, _| self.valid(Seq::packed(s).as_bytes()));
        Tables { decode, encode }
    }

    /// A GB18030 four-byte sequence's character.
    fn decode_four(self, s: u32, bytes: &[u8]) -> Option<char> {
        for &(first, last, cp) in self.fix().decode {
            if (first..=last).contains(&s) {
                return char::from_u32(cp + (s - first)).filter(|_| cp != 0);
            }
        }
        base_char(self.base(), bytes)
    }

    /// The character a valid sequence stands for; None when Postgres has no equivalent.
    pub fn decode_char(self, s: &[u8]) -> Option<char> {
        let v = pack(s);
        if s.len() == 4 {
            return self.decode_four(v, s);
        }
        self.tables().decode.get(&v).copied()
    }

    /// The bytes for character `c`; None when the encoding cannot represent it.
    pub fn encode_char(self, c: char) -> Option<Seq> {
        if c.is_ascii() {
            return Some(Seq::packed(u32::from(c)));
        }
        match self.tables().encode.get(&c) {
            Some(0) => None,
            Some(&s) => Some(Seq::packed(s)),
            None if self == MultiByte::Gb18030 => {
                let s = base_seq(self.base(), c).filter(|&s| s > 0xff_ffff)?;
                let seq = Seq::packed(s);
                (self.decode_four(s, seq.as_bytes()) == Some(c)).then_some(seq)
            }
            None => None,
        }
    }
}

/// Multi-byte text (from the client) to UTF-8, stopping at the first character Postgres
/// rejects.
pub(super) fn decode(m: MultiByte, b: &[u8]) -> Result<Cow<'_, str>, EncodingError> {
    if b.is_ascii() && !b.contains(&0) {
        if let Ok(t) = std::str::from_utf8(b) {
            return Ok(Cow::Borrowed(t));
        }
    }
    let mut out = String::with_capacity(b.len() * 2);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != 0 && c < 0x80 {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let n = match (c, m.char_len(&b[i..])) {
            (0, _) => Err(1),
            (_, n) => n,
        };
        let n = n.map_err(|n| EncodingError::Invalid {
            encoding: m.name(),
            bytes: b[i..i + n].to_vec(),
        })?;
        let ch = m
            .decode_char(&b[i..i + n])
            .ok_or_else(|| EncodingError::Untranslatable {
                from: m.name(),
                to: "UTF8",
                bytes: b[i..i + n].to_vec(),
            })?;
        out.push(ch);
        i += n;
    }
    Ok(Cow::Owned(out))
}

/// UTF-8 text (from the server) to a multi-byte encoding.
pub(super) fn encode(m: MultiByte, b: &[u8]) -> Result<Cow<'_, [u8]>, EncodingError> {
    super::from_utf8_with(b, m.name(), |ch, out| {
        m.encode_char(ch)
            .map(|s| out.extend_from_slice(s.as_bytes()))
    })
}
