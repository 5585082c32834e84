//! Unit tests of the encoding names, tables and conversions (pure functions).

use super::*;

fn single(name: &str) -> SingleByte {
    match Encoding::from_name(name) {
        Some(Encoding::Single(s)) => s,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn names_and_aliases_as_postgres_reads_them() {
    for (name, want) in [
        ("LATIN1", "LATIN1"),
        ("ISO-8859-1", "LATIN1"),
        ("Latin 1", "LATIN1"),
        ("iso88599", "LATIN5"),
        ("iso_8859_15", "LATIN9"),
        ("unicode", "UTF8"),
        ("utf-8", "UTF8"),
        ("SQL_ASCII", "SQL_ASCII"),
        ("win", "WIN1251"),
        ("alt", "WIN866"),
        ("tcvn", "WIN1258"),
        ("koi8", "KOI8R"),
        ("koi8-u", "KOI8U"),
        ("windows-1252", "WIN1252"),
        ("ISO_8859_5", "ISO_8859_5"),
        ("mskanji", "SJIS"),
        ("win950", "BIG5"),
    ] {
        assert_eq!(
            Encoding::from_name(name).map(Encoding::name),
            Some(want),
            "{name}"
        );
    }
    assert_eq!(Encoding::from_name("cp1252"), None);
    assert_eq!(Encoding::from_name("utf16"), None);
    assert!(matches!(
        Encoding::from_name("EUC_JP"),
        Some(Encoding::Other("EUC_JP"))
    ));
    for s in SINGLE_BYTE {
        assert_eq!(Encoding::from_name(s.name()), Some(Encoding::Single(s)));
    }
}

#[test]
fn conversions_by_pair() {
    let c = |a: &str, b: &str| Conversion::new(Some(a), Some(b));
    assert_eq!(c("UTF8", "UTF8"), Conversion::Utf8);
    assert_eq!(c("unicode", "UTF8"), Conversion::Utf8);
    assert_eq!(c("UTF8", "SQL_ASCII"), Conversion::Utf8);
    assert_eq!(c("LATIN1", "LATIN1"), Conversion::Same);
    assert_eq!(c("LATIN1", "SQL_ASCII"), Conversion::Same);
    assert_eq!(c("LATIN1", "UTF8"), Conversion::Single(SingleByte::Latin1));
    assert_eq!(c("EUC_JP", "UTF8"), Conversion::Unsupported);
    assert_eq!(c("UTF8", "LATIN1"), Conversion::Unsupported);
    assert_eq!(Conversion::new(None, None), Conversion::Utf8);
    assert!(Conversion::Utf8.passes_through());
    assert!(!c("LATIN1", "UTF8").passes_through());
}

#[test]
fn latin1_is_iso_8859_1_not_windows_1252() {
    let l = SingleByte::Latin1;
    for b in 0x01..=0xffu8 {
        assert_eq!(l.decode_byte(b), Some(char::from(b)));
        assert_eq!(l.encode_char(char::from(b)), Some(b));
    }
    assert_eq!(l.encode_char('€'), None);
    let conv = Conversion::Single(l);
    assert_eq!(&conv.parameter(b"caf\xe9").unwrap()[..], "café".as_bytes());
    assert_eq!(&conv.to_client("café".as_bytes()).unwrap()[..], b"caf\xe9");
    assert_eq!(&conv.to_client(b"plain").unwrap()[..], b"plain");
    assert_eq!(
        conv.statement_text(b"NOTIFY c, '\xc3\xa9'").unwrap(),
        "NOTIFY c, 'Ã©'"
    );
}

#[test]
fn tables_follow_postgres_where_whatwg_differs() {
    // Observed on PostgreSQL 15 with convert_from/convert_to.
    let w1252 = single("WIN1252");
    assert_eq!(w1252.decode_byte(0x80), Some('€'));
    assert_eq!(w1252.decode_byte(0x81), None);
    assert_eq!(w1252.encode_char('\u{81}'), None);
    let latin5 = single("LATIN5");
    assert_eq!(latin5.decode_byte(0x80), Some('\u{80}'));
    assert_eq!(latin5.decode_byte(0xd0), Some('Ğ'));
    assert_eq!(latin5.encode_char('€'), None);
    let latin3 = single("LATIN3");
    assert_eq!(latin3.decode_byte(0xa5), None);
    let koi8u = single("KOI8U");
    assert_eq!(koi8u.decode_byte(0xae), Some('\u{255d}'));
    assert_eq!(koi8u.decode_byte(0xa4), Some('є'));
    assert_eq!(koi8u.encode_char('ў'), None);
    assert_eq!(single("WIN1251").decode_byte(0x98), None);
    assert_eq!(single("WIN1255").decode_byte(0xca), None);
    assert_eq!(single("WIN1255").encode_char('\u{5ba}'), None);
    assert_eq!(single("LATIN9").decode_byte(0xa4), Some('€'));
    assert_eq!(single("WIN866").decode_byte(0x80), Some('А'));
}

#[test]
fn every_table_round_trips() {
    for s in SINGLE_BYTE {
        for b in 0x01..=0xffu8 {
            if let Some(c) = s.decode_byte(b) {
                assert_eq!(s.encode_char(c), Some(b), "{} byte {b:#x}", s.name());
            }
        }
    }
}

#[test]
fn errors_worded_as_postgres_words_them() {
    let latin1 = Conversion::Single(SingleByte::Latin1);
    let e = latin1.to_client("a中b".as_bytes()).unwrap_err();
    assert_eq!(e.sqlstate(), "22P05");
    assert_eq!(
        e.to_string(),
        "character with byte sequence 0xe4 0xb8 0xad in encoding \"UTF8\" has no equivalent in encoding \"LATIN1\""
    );
    let e = latin1.parameter(b"ab\0cd").unwrap_err();
    assert_eq!(e.sqlstate(), "22021");
    assert_eq!(
        e.to_string(),
        "invalid byte sequence for encoding \"LATIN1\": 0x00"
    );
    let e = Conversion::Single(single("WIN1252"))
        .parameter(b"ab\x81")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "character with byte sequence 0x81 in encoding \"WIN1252\" has no equivalent in encoding \"UTF8\""
    );
    let utf8 = Conversion::Utf8;
    assert_eq!(
        utf8.parameter(b"ab\xffcd").unwrap_err().to_string(),
        "invalid byte sequence for encoding \"UTF8\": 0xff"
    );
    assert_eq!(
        utf8.parameter(b"ab\xe4\xb8'").unwrap_err().to_string(),
        "invalid byte sequence for encoding \"UTF8\": 0xe4 0xb8 0x27"
    );
    assert_eq!(
        utf8.parameter(b"ab\xe4\xb8").unwrap_err().to_string(),
        "invalid byte sequence for encoding \"UTF8\": 0xe4 0xb8"
    );
    assert_eq!(
        utf8.parameter(b"a\0\xff").unwrap_err().to_string(),
        "invalid byte sequence for encoding \"UTF8\": 0x00"
    );
    assert!(utf8.parameter("中".as_bytes()).is_ok());
}

#[test]
fn unsupported_pairs_take_ascii_statements_only() {
    let u = Conversion::Unsupported;
    assert_eq!(u.statement_text(b"LISTEN c").as_deref(), Some("LISTEN c"));
    assert_eq!(u.statement_text(b"NOTIFY c, '\xa4\xa2'"), None);
    assert_eq!(&u.parameter(b"\xa4\xa2").unwrap()[..], b"\xa4\xa2");
    assert_eq!(&u.to_client("中".as_bytes()).unwrap()[..], "中".as_bytes());
    assert_eq!(Conversion::Utf8.statement_text(b"bad \xff"), None);
    assert_eq!(
        Conversion::Single(SingleByte::Latin1).statement_text(b"x\x00"),
        None
    );
}
