//! Every mapped type, its edge values, and malformed text.

use super::*;

fn s(connect_name: Option<&'static str>) -> ColumnType {
    ColumnType::String { connect_name }
}

#[test]
fn oids_map_as_documented() {
    assert_eq!(column_type(21, -1), ColumnType::Int);
    assert_eq!(column_type(23, -1), ColumnType::Int);
    assert_eq!(column_type(20, -1), ColumnType::Long);
    assert_eq!(column_type(700, -1), ColumnType::Float);
    assert_eq!(column_type(701, -1), ColumnType::Double);
    assert_eq!(column_type(16, -1), ColumnType::Boolean);
    assert_eq!(column_type(25, -1), s(None));
    assert_eq!(column_type(1043, 36), s(None));
    // numeric(10,2): typmod = (10 << 16 | 2) + 4
    assert_eq!(
        column_type(1700, (10 << 16 | 2) + 4),
        ColumnType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert_eq!(
        column_type(1700, -1),
        s(None),
        "unconstrained numeric is a string"
    );
    assert_eq!(column_type(1082, -1), ColumnType::Date);
    assert_eq!(column_type(1083, -1), ColumnType::TimeMicros);
    assert_eq!(column_type(1114, -1), ColumnType::TimestampMicros);
    assert_eq!(column_type(1184, -1), ColumnType::ZonedTimestamp);
    assert_eq!(column_type(2950, -1), s(Some("io.debezium.data.Uuid")));
    assert_eq!(column_type(3802, -1), s(Some("io.debezium.data.Json")));
    assert_eq!(column_type(114, -1), s(Some("io.debezium.data.Json")));
    assert_eq!(column_type(17, -1), ColumnType::Bytes);
    assert_eq!(
        column_type(1007, -1),
        ColumnType::Array(Box::new(ColumnType::Int))
    );
    assert_eq!(
        column_type(99_999, -1),
        s(None),
        "enums and unknown types are strings"
    );
}

#[test]
fn scalars_parse_to_avro_values() {
    assert_eq!(
        ColumnType::Int.parse("-2147483648"),
        Ok(Value::Int(i32::MIN))
    );
    assert_eq!(
        ColumnType::Long.parse("9223372036854775807"),
        Ok(Value::Long(i64::MAX))
    );
    assert_eq!(
        ColumnType::Double.parse("1.5e300"),
        Ok(Value::Double(1.5e300))
    );
    assert_eq!(
        ColumnType::Double.parse("-Infinity"),
        Ok(Value::Double(f64::NEG_INFINITY))
    );
    assert!(matches!(ColumnType::Float.parse("NaN"), Ok(Value::Float(f)) if f.is_nan()));
    assert_eq!(ColumnType::Boolean.parse("t"), Ok(Value::Boolean(true)));
    assert_eq!(s(None).parse("café ✓"), Ok(Value::String("café ✓".into())));
    assert_eq!(
        ColumnType::Bytes.parse("\\x00ff10"),
        Ok(Value::Bytes(vec![0, 255, 16]))
    );
}

#[test]
fn numerics_are_twos_complement_unscaled_bytes() {
    let d = |t: &str, scale| decimal_bytes(t, scale).expect(t);
    assert_eq!(d("0", 0), vec![0]);
    assert_eq!(d("12.50", 2), vec![0x04, 0xE2]); // 1250
    assert_eq!(
        d("12.5", 2),
        vec![0x04, 0xE2],
        "shorter fractions are padded to the scale"
    );
    assert_eq!(d("127", 0), vec![0x7F]);
    assert_eq!(
        d("128", 0),
        vec![0x00, 0x80],
        "a sign byte when the top bit is set"
    );
    assert_eq!(d("-1", 0), vec![0xFF]);
    assert_eq!(d("-128", 0), vec![0x80]);
    assert_eq!(d("-129", 0), vec![0xFF, 0x7F]);
    assert_eq!(d("-0.01", 2), vec![0xFF]);
    // 38 nines: larger than i64, exact.
    let big = "9".repeat(38);
    let bytes = d(&big, 0);
    assert_eq!(bytes.len(), 16);
    assert_eq!(
        i128::from_be_bytes(bytes.try_into().unwrap()),
        big.parse::<i128>().unwrap()
    );
    assert_eq!(
        decimal_bytes("1.234", 2),
        None,
        "more fraction digits than the scale"
    );
    assert_eq!(decimal_bytes("NaN", 2), None);
    assert_eq!(decimal_bytes("", 2), None);
}

#[test]
fn dates_times_and_timestamps() {
    assert_eq!(ColumnType::Date.parse("1970-01-01"), Ok(Value::Date(0)));
    assert_eq!(
        ColumnType::Date.parse("2000-03-01"),
        Ok(Value::Date(11_017))
    );
    assert_eq!(ColumnType::Date.parse("1969-12-31"), Ok(Value::Date(-1)));
    assert_eq!(
        ColumnType::TimeMicros.parse("08:49:37.5"),
        Ok(Value::TimeMicros(31_777_500_000))
    );
    assert_eq!(
        ColumnType::TimestampMicros.parse("2024-11-05 08:49:37.123456"),
        Ok(Value::TimestampMicros(1_730_796_577_123_456))
    );
    assert_eq!(
        ColumnType::ZonedTimestamp.parse("2024-11-05 08:49:37.123+00"),
        Ok(Value::String("2024-11-05T08:49:37.123000Z".into()))
    );
    assert_eq!(
        ColumnType::ZonedTimestamp.parse("2024-11-05 14:19:37+05:30"),
        Ok(Value::String("2024-11-05T08:49:37.000000Z".into())),
        "offsets are normalised to UTC"
    );
    assert!(ColumnType::Date.parse("infinity").is_err());
    assert!(ColumnType::TimeMicros.parse("25:00").is_err());
}

#[test]
fn one_dimensional_arrays_with_nulls_and_quotes() {
    let ints = ColumnType::Array(Box::new(ColumnType::Int));
    assert_eq!(
        ints.parse("{1,NULL,3}"),
        Ok(Value::Array(vec![
            Value::Union(1, Box::new(Value::Int(1))),
            Value::Union(0, Box::new(Value::Null)),
            Value::Union(1, Box::new(Value::Int(3))),
        ]))
    );
    let texts = ColumnType::Array(Box::new(s(None)));
    assert_eq!(
        texts.parse(r#"{"a b","c\"d",NULL,"NULL"}"#),
        Ok(Value::Array(vec![
            Value::Union(1, Box::new(Value::String("a b".into()))),
            Value::Union(1, Box::new(Value::String("c\"d".into()))),
            Value::Union(0, Box::new(Value::Null)),
            Value::Union(1, Box::new(Value::String("NULL".into()))),
        ]))
    );
    assert_eq!(ints.parse("{}"), Ok(Value::Array(vec![])));
    assert!(
        ints.parse("{{1,2},{3,4}}").is_err(),
        "multi-dimensional arrays are refused, not guessed"
    );
}

#[test]
fn malformed_text_names_the_type() {
    let err = ColumnType::Int.parse("12x").unwrap_err();
    assert_eq!(err.to_string(), "value \"12x\" is not a valid int");
    assert!(ColumnType::Boolean.parse("true").is_err());
    assert!(ColumnType::Bytes.parse("00ff").is_err());
}

#[test]
fn schemas_carry_logical_types_and_connect_names() {
    let dec = ColumnType::Decimal {
        precision: 10,
        scale: 2,
    }
    .avro_schema();
    assert_eq!(dec["logicalType"], "decimal");
    assert_eq!(
        (dec["precision"].as_u64(), dec["scale"].as_u64()),
        (Some(10), Some(2))
    );
    assert_eq!(
        ColumnType::ZonedTimestamp.avro_schema()["connect.name"],
        "io.debezium.time.ZonedTimestamp"
    );
    assert_eq!(
        s(Some("io.debezium.data.Json")).avro_schema()["connect.name"],
        "io.debezium.data.Json"
    );
    assert_eq!(
        ColumnType::TimestampMicros.avro_schema()["logicalType"],
        "timestamp-micros"
    );
}

#[test]
fn timestamptz_text_becomes_utc_iso_8601_with_microseconds() {
    for (text, want) in [
        ("2024-11-05 09:49:37.5+01", "2024-11-05T08:49:37.500000Z"),
        ("2024-11-05 08:49:37+00", "2024-11-05T08:49:37.000000Z"),
        (
            "1999-12-31 23:59:59.999999-05:30",
            "2000-01-01T05:29:59.999999Z",
        ),
        (
            "0001-01-01 00:00:00.000001+00",
            "0001-01-01T00:00:00.000001Z",
        ),
        ("2000-02-29 12:00:00.12+14", "2000-02-28T22:00:00.120000Z"),
        ("9999-12-31 23:59:59.5-01", "10000-01-01T00:59:59.500000Z"),
    ] {
        let v = ColumnType::ZonedTimestamp.parse(text).expect(text);
        assert_eq!(v, apache_avro::types::Value::String(want.into()), "{text}");
    }
}
