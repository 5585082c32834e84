//! The multi-byte client encodings, checked exhaustively against the server's own
//! conversions (`convert_from` / `convert_to` on PostgreSQL 15): every code point of the
//! BMP (every plane for GB18030) to each encoding, and every 1- and 2-byte sequence (every
//! EUC_JP 3-byte one, a dense sample of GB18030 4-byte ones) from it, results and error
//! messages alike.

mod support;

use pgherald::protocol::encoding::{Conversion, EncodingError, MultiByte, MULTI_BYTE};
use support::postgres::{DEFAULT_DB, SUPERUSER};

/// Postgres's conversion of bytes from `enc` to UTF-8 (`dcv`) or of one code point from
/// UTF-8 to `enc` (`ecv`), as hex bytes or `SQLSTATE:message`.
const FUNCTIONS: &str = "
CREATE OR REPLACE FUNCTION pg_temp.dcv(enc text, b bytea) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  RETURN encode(convert_to(convert_from(b, enc), 'UTF8'), 'hex');
EXCEPTION WHEN others THEN RETURN sqlstate || ':' || sqlerrm;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.ecv(enc text, x int) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  RETURN encode(convert_to(chr(x), enc), 'hex');
EXCEPTION WHEN others THEN RETURN sqlstate || ':' || sqlerrm;
END $$";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn show(r: Result<std::borrow::Cow<'_, [u8]>, EncodingError>) -> String {
    match r {
        Ok(b) => hex(&b),
        Err(e) => format!("{}:{e}", e.sqlstate()),
    }
}

/// The byte strings checked from the client's side.
fn sequences(m: MultiByte) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0x80..=0xffu8).map(|a| vec![a]).collect();
    for a in 0x80..=0xffu8 {
        v.extend((0..=0xffu8).map(|b| vec![a, b]));
    }
    match m {
        MultiByte::EucJp | MultiByte::EucKr | MultiByte::EucCn | MultiByte::Johab => {
            for a in 0..=0xffu8 {
                v.extend((0..=0xffu8).map(|b| vec![0x8f, a, b]));
            }
            // (In JOHAB 0x8E leads a two-byte character, as any high byte but 0x8F.)
            if m != MultiByte::Johab {
                for a in 0..=0xffu8 {
                    v.extend([0x00, 0x41, 0xa1, 0xa4, 0xff].map(|b| vec![0x8e, a, b]));
                }
            }
            v.extend([vec![0xa4, 0xa2, 0x8f], vec![0x8e, 0xa1, 0xa4, 0xa2]]);
        }
        MultiByte::Gb18030 => {
            let leads = [
                0x80, 0x81, 0x82, 0x84, 0x85, 0x8f, 0x90, 0x95, 0xe3, 0xe4, 0xfe, 0xff,
            ];
            let lasts = [
                0x00, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x41,
            ];
            for a in leads {
                for b in 0x30..=0x39u8 {
                    for c in 0..=0xffu8 {
                        v.extend(lasts.iter().map(|&d| vec![a, b, c, d]));
                    }
                    v.push(vec![a, b, 0x81]);
                }
            }
            // Every four-byte sequence of the BMP's range and the first supplementary ones.
            for a in [0x81, 0x82, 0x83, 0x84, 0x90] {
                for b in 0x30..=0x39u8 {
                    for c in 0x81..=0xfeu8 {
                        v.extend((0x30..=0x39u8).map(|d| vec![a, b, c, d]));
                    }
                }
            }
        }
        _ => v.extend([vec![0x41, 0x8d, 0x20], vec![0xb0, 0xa1, 0x81]]),
    }
    v
}

async fn check(m: MultiByte) -> Vec<String> {
    let c = support::postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    c.batch_execute(FUNCTIONS).await.expect("create functions");
    let conv = Conversion::Multi(m);
    let mut diffs = vec![];
    let seqs = sequences(m);
    let rows = c
        .query(
            "SELECT pg_temp.dcv($1, x) FROM unnest($2::bytea[]) WITH ORDINALITY AS t(x, i) ORDER BY i",
            &[&m.name(), &seqs],
        )
        .await
        .expect("decode sequences");
    assert_eq!(rows.len(), seqs.len());
    for (s, r) in seqs.iter().zip(rows) {
        let theirs: String = r.get(0);
        let ours = show(conv.parameter(s));
        if ours != theirs {
            diffs.push(format!(
                "{} {}: postgres {theirs}, pgherald {ours}",
                m.name(),
                hex(s)
            ));
        }
    }
    let top: i32 = if m == MultiByte::Gb18030 {
        0x10ffff
    } else {
        0xffff
    };
    let rows = c
        .query(
            "SELECT x, pg_temp.ecv($1, x) FROM generate_series(128, $2) x
             WHERE x < 55296 OR x > 57343 ORDER BY x",
            &[&m.name(), &top],
        )
        .await
        .expect("encode code points");
    for r in rows {
        let (x, theirs): (i32, String) = (r.get(0), r.get(1));
        let ch = char::from_u32(x as u32).expect("code point");
        let ours = show(conv.to_client(ch.to_string().as_bytes()));
        if ours != theirs {
            diffs.push(format!(
                "{} U+{x:04X}: postgres {theirs}, pgherald {ours}",
                m.name()
            ));
        }
    }
    diffs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_conversions_match_postgres() {
    let tasks: Vec<_> = MULTI_BYTE.iter().map(|&m| tokio::spawn(check(m))).collect();
    let mut diffs = vec![];
    for t in tasks {
        diffs.extend(t.await.expect("check task"));
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(200)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_aliases_resolve_as_postgres_resolves_them() {
    let c = support::postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    for alias in [
        "SJIS",
        "Shift_JIS",
        "MSKANJI",
        "WIN932",
        "windows932",
        "EUC_JP",
        "eucjp",
        "BIG5",
        "WIN950",
        "windows950",
        "GBK",
        "WIN936",
        "windows936",
        "UHC",
        "WIN949",
        "windows949",
        "EUC_KR",
        "euckr",
        "GB18030",
        "EUC_CN",
        "euccn",
        "JOHAB",
    ] {
        c.batch_execute(&format!("SET client_encoding = '{alias}'"))
            .await
            .expect("set client_encoding");
        let row = c
            .query_one("SHOW client_encoding", &[])
            .await
            .expect("show");
        let theirs: String = row.get(0);
        let ours = Conversion::new(Some(alias), Some("UTF8"));
        match ours {
            Conversion::Multi(m) => assert_eq!(m.name(), theirs, "{alias}"),
            other => panic!("{alias}: {other:?}"),
        }
    }
    c.batch_execute("RESET client_encoding")
        .await
        .expect("reset");
}
