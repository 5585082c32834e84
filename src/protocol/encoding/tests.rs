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
    assert_eq!(
        Encoding::from_name("eucjp"),
        Some(Encoding::Multi(MultiByte::EucJp))
    );
    assert!(matches!(
        Encoding::from_name("EUC_TW"),
        Some(Encoding::Other("EUC_TW"))
    ));
    for (alias, want) in [
        ("Shift_JIS", MultiByte::Sjis),
        ("WIN932", MultiByte::Sjis),
        ("WIN936", MultiByte::Gbk),
        ("WIN949", MultiByte::Uhc),
        ("WIN950", MultiByte::Big5),
    ] {
        assert_eq!(Encoding::from_name(alias), Some(Encoding::Multi(want)));
    }
    assert_eq!(
        Encoding::from_name("SHIFT_JIS_2004").map(Encoding::name),
        Some("SHIFT_JIS_2004")
    );
    for m in MULTI_BYTE {
        assert_eq!(Encoding::from_name(m.name()), Some(Encoding::Multi(m)));
    }
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
    assert_eq!(c("EUC_JP", "UTF8"), Conversion::Multi(MultiByte::EucJp));
    assert_eq!(c("EUC_TW", "UTF8"), Conversion::Unsupported);
    assert_eq!(c("EUC_JP", "EUC_JP"), Conversion::Same);
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

fn sample(m: MultiByte, bytes: &[u8]) -> String {
    match Conversion::Multi(m).parameter(bytes) {
        Ok(t) => String::from_utf8(t.into_owned()).unwrap(),
        Err(e) => format!("{}: {e}", e.sqlstate()),
    }
}

#[test]
fn multibyte_samples_as_postgres_15_converts_them() {
    // Observed on PostgreSQL 15 with convert_from/convert_to.
    use MultiByte::*;
    assert_eq!(sample(Sjis, b"\x82\xa0 \xb1"), "あ ｱ");
    assert_eq!(sample(Sjis, b"\x81\x5f"), "＼");
    assert_eq!(
        sample(Sjis, b"\xf0\x40"),
        "22P05: character with byte sequence 0xf0 0x40 in encoding \"SJIS\" has no equivalent in encoding \"UTF8\""
    );
    assert_eq!(
        sample(Sjis, b"a\x81"),
        "22021: invalid byte sequence for encoding \"SJIS\": 0x81"
    );
    assert_eq!(
        sample(Sjis, b"\x81\x00"),
        "22021: invalid byte sequence for encoding \"SJIS\": 0x81 0x00"
    );
    assert_eq!(sample(EucJp, b"\xa4\xa2\x8e\xb1"), "あｱ");
    assert_eq!(sample(EucJp, b"\x8f\xa2\xc3"), "￤");
    assert_eq!(
        sample(EucJp, b"\x8f\xa1\x41"),
        "22021: invalid byte sequence for encoding \"EUC_JP\": 0x8f 0xa1 0x41"
    );
    assert_eq!(sample(Big5, b"\xa4\xa4"), "中");
    assert_eq!(sample(Big5, b"\xa1\x45"), "•");
    assert_eq!(
        sample(Big5, b"\x8d\x20"),
        "22021: invalid byte sequence for encoding \"BIG5\": 0x8d 0x20"
    );
    assert_eq!(sample(Gbk, b"\xd6\xd0"), "中");
    assert_eq!(sample(Uhc, b"\xb0\xa1"), "가");
    assert_eq!(sample(EucKr, b"\xa2\xe8"), "㉾");
    assert_eq!(sample(Gb18030, b"\x81\x30\x81\x30"), "\u{80}");
    assert_eq!(sample(Gb18030, b"\xa6\xd9"), "\u{e78d}");
    assert_eq!(sample(Gb18030, b"\x90\x30\x81\x30"), "\u{10000}");
    assert_eq!(
        sample(Gb18030, b"\x81\x30\x81"),
        "22021: invalid byte sequence for encoding \"GB18030\": 0x81 0x30 0x81"
    );
    assert_eq!(sample(EucCn, b"\xd6\xd0"), "中");
    // JOHAB reads only trails 0xA1..0xFE, though it writes others.
    assert_eq!(sample(Johab, b"\x88\xa1"), "갸");
    assert_eq!(sample(Johab, b"\xd9\xa1"), "⇒");
    assert_eq!(
        sample(Johab, b"\x88\x61"),
        "22021: invalid byte sequence for encoding \"JOHAB\": 0x88 0x61"
    );
    assert_eq!(
        sample(EucCn, b"\x81\x40"),
        "22021: invalid byte sequence for encoding \"EUC_CN\": 0x81 0x40"
    );
    assert_eq!(
        sample(EucCn, b"\x8e\xa1\xa4"),
        "22021: invalid byte sequence for encoding \"EUC_CN\": 0x8e 0xa1 0xa4"
    );
}

#[test]
fn multibyte_to_client_as_postgres_15_converts() {
    use MultiByte::*;
    let to = |m: MultiByte, s: &str| match Conversion::Multi(m).to_client(s.as_bytes()) {
        Ok(b) => b.into_owned(),
        Err(e) => e.to_string().into_bytes(),
    };
    assert_eq!(to(Sjis, "¥‾"), b"\x5c\x7e");
    assert_eq!(to(Sjis, "∵"), b"\x81\xe6");
    assert_eq!(to(Sjis, "ⅰ"), b"\xfa\x40");
    assert_eq!(to(EucJp, "あ"), b"\xa4\xa2");
    assert_eq!(to(Big5, "中"), b"\xa4\xa4");
    assert_eq!(to(Gbk, "€"), b"\x80");
    assert_eq!(to(Gb18030, "\u{1e3f}"), b"\x81\x35\xf4\x37");
    assert_eq!(to(Gb18030, "\u{9fb4}"), b"\x82\x35\x90\x37");
    assert_eq!(to(Gb18030, "😀"), b"\x94\x39\xfc\x36");
    assert_eq!(
        to(EucCn, "€"),
        "character with byte sequence 0xe2 0x82 0xac in encoding \"UTF8\" has no equivalent in encoding \"EUC_CN\"".as_bytes()
    );
    assert_eq!(to(Johab, "가ㄱ"), b"\x88\x61\x88\x41");
    assert!(!Conversion::Multi(Sjis).passes_through());
}

#[test]
fn multibyte_ascii_is_borrowed() {
    for m in MULTI_BYTE {
        let c = Conversion::Multi(m);
        assert!(matches!(c.parameter(b"LISTEN x"), Ok(Cow::Borrowed(_))));
        assert!(matches!(c.to_client(b"payload"), Ok(Cow::Borrowed(_))));
        assert!(matches!(
            c.statement_text(b"NOTIFY c"),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(c.statement_text(b"x\x00"), None);
    }
    let sjis = Conversion::Multi(MultiByte::Sjis);
    // A trail byte in the ASCII range belongs to its character.
    assert_eq!(
        sjis.statement_text(b"NOTIFY c, '\x83\x5c'").as_deref(),
        Some("NOTIFY c, 'ソ'")
    );
}
