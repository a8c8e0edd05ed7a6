//! Column values of the replication stream in text form (`source::postgres::types`): ints,
//! floats, numerics, dates, times, timestamps with and without zone, bytea and arrays. Any text
//! for any type is a value or a `TypeError` naming the type, never a panic (an overflow in a
//! debug build is one); the text Postgres writes reads back as the value it stands for.

use apache_avro::types::Value;
use proptest::prelude::*;
use switchyard::source::postgres::types::{ColumnType, column_type, decimal_bytes};

use crate::{cases, within_heap};

/// Every column type the mapping has (arrays of each element type included).
fn column_types() -> Vec<ColumnType> {
    [
        (23, -1),
        (20, -1),
        (700, -1),
        (701, -1),
        (16, -1),
        (25, -1),
        (1700, (12 << 16 | 4) + 4),
        (1700, (3 << 16) + 4),
        (1082, -1),
        (1083, -1),
        (1114, -1),
        (1184, -1),
        (2950, -1),
        (3802, -1),
        (17, -1),
        (1007, -1),
        (1016, -1),
        (1021, -1),
        (1022, -1),
        (1000, -1),
        (1009, -1),
        (2951, -1),
    ]
    .into_iter()
    .map(|(oid, typmod)| column_type(oid, typmod))
    .collect()
}

/// A number as text: any sign, leading zeros, long, huge.
fn int_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{1,25}",
        Just(i64::MIN.to_string()),
        Just("99999999999999999999".to_string()),
    ]
}

/// Text shaped like a date, time or timestamp, with parts of any size and odd offsets.
fn temporal_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![int_text(), "[0-9]{1,2}", Just(String::new())];
    let offset = prop_oneof![
        Just(String::new()),
        Just("+00".to_string()),
        "[+-][0-9]{2}(:[0-9]{2}){0,2}",
        (
            prop_oneof![Just("+"), Just("-")],
            int_text(),
            proptest::option::of(int_text())
        )
            .prop_map(|(s, h, m)| match m {
                Some(m) => format!("{s}{h}:{m}"),
                None => format!("{s}{h}"),
            }),
    ];
    (
        proptest::collection::vec(part, 6),
        proptest::option::of("[0-9]{0,9}"),
        offset,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(p, frac, offset, bc, date_only)| {
            let date = format!("{}-{}-{}", p[0], p[1], p[2]);
            let bc = if bc { " BC" } else { "" };
            if date_only {
                return format!("{date}{bc}");
            }
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{date} {}:{}:{}{frac}{offset}{bc}", p[3], p[4], p[5])
        })
}

/// Text shaped like an array literal, nested and quoted oddly.
fn array_text() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        "[a-z0-9.-]{0,6}",
        Just("NULL".to_string()),
        "\"([^\"\\\\]|\\\\.){0,6}\"",
        Just("{1,2}".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
    ];
    proptest::collection::vec(item, 0..6).prop_map(|items| format!("{{{}}}", items.join(",")))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        int_text(),
        temporal_text(),
        array_text(),
        "-?[0-9]{0,30}(\\.[0-9]{0,30})?",
        "\\\\x[0-9a-fA-F]{0,9}",
        "\\PC{0,24}",
        proptest::sample::select(vec![
            "NaN",
            "Infinity",
            "-Infinity",
            "infinity",
            "t",
            "f",
            ""
        ])
        .prop_map(str::to_string),
    ]
}

/// The value of a big-endian two's-complement decimal's bytes.
fn unscaled(bytes: &[u8]) -> i128 {
    let mut v: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in bytes {
        v = (v << 8) | i128::from(*b);
    }
    v
}

/// `n` at `scale` as Postgres writes a numeric: `-12.3400`.
fn numeric_text(n: i128, scale: u32) -> String {
    let digits = n.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if n < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// An array literal as Postgres writes one of text elements.
fn array_literal(items: &[Option<String>]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| match i {
            None => "NULL".to_string(),
            Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!("{{{}}}", quoted.join(","))
}

proptest! {
    #![proptest_config(cases(5000))]

    /// Any text for any type: a value or an error naming the type.
    #[test]
    fn any_text_is_a_value_or_an_error_never_a_panic(text in any_text()) {
        for t in column_types() {
            let shown = || format!("{t:?} of {text:?}");
            match within_heap(64 * text.len() as u64 + 4096, &shown, || t.parse(&text)) {
                Ok(_) => {}
                Err(e) => prop_assert!(
                    e.to_string().contains("is not a valid") && e.value.chars().count() <= 80,
                    "{}: {}", shown(), e
                ),
            }
        }
    }

    /// Numerics read back as the number written, at every scale up to 30 digits.
    #[test]
    fn numerics_read_back_as_written(n in any::<i64>().prop_map(i128::from), scale in 0u32..=30) {
        let text = numeric_text(n, scale);
        let bytes = decimal_bytes(&text, scale).ok_or_else(|| TestCaseError::fail(text.clone()))?;
        prop_assert_eq!(unscaled(&bytes), n, "{}", text);
        // Minimal two's complement: no redundant sign byte.
        if let [first, second, ..] = bytes[..] {
            let redundant = (first == 0 && second & 0x80 == 0) || (first == 0xff && second & 0x80 != 0);
            prop_assert!(!redundant, "{} has a redundant sign byte: {:02x?}", text, bytes);
        }
        // A digit more than the scale allows is refused, not rounded.
        let one_digit_more = format!("{text}{}", if scale == 0 { ".1" } else { "1" });
        prop_assert!(decimal_bytes(&one_digit_more, scale).is_none(), "{}", one_digit_more);
    }

    /// A timestamp reads as its date's days plus its time of day, and a timestamptz written in
    /// UTC reads back as the same instant in ISO-8601.
    #[test]
    fn timestamps_read_back_as_written(
        y in 1i64..=9999, m in 1u32..=12, d in 1u32..=28,
        h in 0u32..24, mi in 0u32..60, s in 0u32..60, us in 0u32..1_000_000,
    ) {
        let date = format!("{y:04}-{m:02}-{d:02}");
        let time = format!("{h:02}:{mi:02}:{s:02}.{us:06}");
        let Value::Date(days) = ColumnType::Date.parse(&date).map_err(|e| TestCaseError::fail(e.to_string()))? else {
            return Err(TestCaseError::fail("not a date"));
        };
        let Value::TimeMicros(in_day) = ColumnType::TimeMicros.parse(&time).map_err(|e| TestCaseError::fail(e.to_string()))? else {
            return Err(TestCaseError::fail("not a time"));
        };
        let ts = ColumnType::TimestampMicros.parse(&format!("{date} {time}"));
        prop_assert_eq!(ts, Ok(Value::TimestampMicros(i64::from(days) * 86_400_000_000 + in_day)));
        let zoned = ColumnType::ZonedTimestamp.parse(&format!("{date} {time}+00"));
        prop_assert_eq!(zoned, Ok(Value::String(format!("{date}T{time}Z"))));
    }

    /// Arrays of text read back element by element, quotes, backslashes and NULLs included.
    #[test]
    fn text_arrays_read_back_as_written(items in proptest::collection::vec(proptest::option::of("\\PC{0,8}"), 0..6)) {
        let text = array_literal(&items);
        let parsed = column_type(1009, -1).parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<Value> = items
            .iter()
            .map(|i| match i {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
            })
            .collect();
        prop_assert_eq!(parsed, Value::Array(want));
    }

    /// bytea in hex form reads back as its bytes.
    #[test]
    fn bytea_reads_back_as_written(bytes in proptest::collection::vec(any::<u8>(), 0..64), upper in any::<bool>()) {
        let hex: String = bytes.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect();
        prop_assert_eq!(ColumnType::Bytes.parse(&format!("\\x{hex}")), Ok(Value::Bytes(bytes)));
    }
}

/// Regressions: parts so large that arithmetic on them overflowed (a panic in a debug build, a
/// wrong value in a release build); each is an error now.
#[test]
fn out_of_range_parts_of_temporal_values_are_errors() {
    for (t, text) in [
        (ColumnType::Date, "9223372036854775807-01-01"),
        (ColumnType::Date, "9223372036854775807-01-01 BC"),
        (ColumnType::TimeMicros, "-9223372036854775808:00:00"),
        (ColumnType::TimeMicros, "00:-9223372036854775808:00"),
        (
            ColumnType::TimestampMicros,
            "2024-01-01 -9223372036854775808:00:00",
        ),
        (
            ColumnType::ZonedTimestamp,
            "2024-01-01 00:00:00+9223372036854775807",
        ),
        (
            ColumnType::ZonedTimestamp,
            "2024-01-01 00:00:00-9223372036854775807:00",
        ),
        (
            ColumnType::ZonedTimestamp,
            "2024-01-01 00:00:00+00:9223372036854775807",
        ),
        (
            ColumnType::ZonedTimestamp,
            "292278994-08-17 07:12:55.807+00 BC",
        ),
    ] {
        let err = t.parse(text).expect_err(text);
        assert!(err.to_string().contains("is not a valid"), "{text}: {err}");
    }
}
