use serde_json::json;

use super::*;

const PAYMENT: &str = r#"{
  "type": "record", "name": "Payment", "namespace": "com.acme",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "count", "type": "int"},
    {"name": "total", "type": "long"},
    {"name": "ratio", "type": "double"},
    {"name": "paid", "type": "boolean"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "currency", "type": "string", "default": "EUR"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OPEN", "PAID"]}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 0},
    {"name": "customer", "type": ["null", {"type": "record", "name": "Customer", "fields": [
      {"name": "name", "type": "string"},
      {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
    ]}], "default": null},
    {"name": "previous", "type": ["null", "Customer"], "default": null},
    {"name": "attrs", "type": {"type": "map", "values": "long"}, "default": {}}
  ]
}"#;

fn schema() -> ValueSchema {
    ValueSchema::from_json(PathBuf::from("payment.avsc"), PAYMENT).expect("schema is valid")
}

fn base() -> Json {
    json!({"id": "pi_1", "amount": "12.50", "count": 3, "total": 9_007_199_254_740_993_i64,
           "ratio": 0.25, "paid": true, "status": "PAID"})
}

fn with(changes: Json) -> Json {
    let mut v = base();
    for (k, x) in changes.as_object().expect("object") {
        if x == &json!("__absent__") {
            v.as_object_mut().expect("object").remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    &fields.iter().find(|(n, _)| n == name).expect("field").1
}

fn decimal_bytes(n: i128) -> Value {
    Value::Decimal(apache_avro::Decimal::from(twos_complement(n)))
}

#[test]
fn fitting_values_convert_exactly_field_by_field() {
    let s = schema();
    let cases: Vec<(Json, &str, Value)> = vec![
        (base(), "id", Value::String("pi_1".into())),
        (base(), "amount", decimal_bytes(1250)),
        (with(json!({"amount": 12.5})), "amount", decimal_bytes(1250)),
        (with(json!({"amount": 7})), "amount", decimal_bytes(700)),
        (
            with(json!({"amount": "-0.01"})),
            "amount",
            decimal_bytes(-1),
        ),
        (
            with(json!({"amount": "1.2e1"})),
            "amount",
            decimal_bytes(1200),
        ),
        (
            with(json!({"amount": "3.100"})),
            "amount",
            decimal_bytes(310),
        ),
        (base(), "count", Value::Int(3)),
        (with(json!({"count": 4.0})), "count", Value::Int(4)),
        (base(), "total", Value::Long(9_007_199_254_740_993)),
        (base(), "ratio", Value::Double(0.25)),
        (base(), "paid", Value::Boolean(true)),
        (base(), "note", Value::Union(0, Box::new(Value::Null))),
        (
            with(json!({"note": "café ✓ 日本"})),
            "note",
            Value::Union(1, Box::new(Value::String("café ✓ 日本".into()))),
        ),
        (base(), "currency", Value::String("EUR".into())),
        (base(), "status", Value::Enum(1, "PAID".into())),
        (base(), "at", Value::TimestampMillis(0)),
        (
            with(json!({"at": 1_700_000_000_123_i64})),
            "at",
            Value::TimestampMillis(1_700_000_000_123),
        ),
        (
            with(json!({"at": "2023-11-14T22:13:20.123Z"})),
            "at",
            Value::TimestampMillis(1_700_000_000_123),
        ),
        (
            with(json!({"at": "2023-11-14T23:13:20.123+01:00"})),
            "at",
            Value::TimestampMillis(1_700_000_000_123),
        ),
        (
            with(json!({"customer": {"name": "Zoë", "ignored": 1}})),
            "customer",
            Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("name".into(), Value::String("Zoë".into())),
                    ("tags".into(), Value::Array(vec![])),
                ])),
            ),
        ),
        (
            with(json!({"previous": {"name": "a", "tags": ["x", "ü"]}})),
            "previous",
            Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("name".into(), Value::String("a".into())),
                    (
                        "tags".into(),
                        Value::Array(vec![Value::String("x".into()), Value::String("ü".into())]),
                    ),
                ])),
            ),
        ),
        (
            with(json!({"attrs": {"ключ": 5}})),
            "attrs",
            Value::Map([("ключ".to_string(), Value::Long(5))].into_iter().collect()),
        ),
    ];
    for (input, name, want) in cases {
        let got = s
            .convert(&input)
            .unwrap_or_else(|e| panic!("{input} should fit: {e}"));
        assert_eq!(field(&got, name), &want, "{name} of {input}");
    }
    // Unknown fields are ignored.
    assert!(s.convert(&with(json!({"extra": {"deep": [1]}}))).is_ok());
}

#[test]
fn values_that_do_not_fit_are_refused_with_where_and_why() {
    let s = schema();
    let cases: Vec<(Json, &str)> = vec![
        (
            with(json!({"id": "__absent__"})),
            "/id: missing required field",
        ),
        (with(json!({"id": 5})), "/id: expected string, got number 5"),
        (
            with(json!({"count": 2_147_483_648_i64})),
            "/count: 2147483648 is out of range for int",
        ),
        (
            with(json!({"count": 1.5})),
            "/count: expected int, got number 1.5",
        ),
        (
            with(json!({"count": "3"})),
            "/count: expected int, got string \"3\"",
        ),
        (
            with(json!({"total": 18_446_744_073_709_551_615_u64})),
            "/total: 18446744073709551615 is out of range for long",
        ),
        (
            with(json!({"ratio": 9_007_199_254_740_993_i64})),
            "/ratio: 9007199254740993 cannot be a double exactly",
        ),
        (with(json!({"paid": "yes"})), "/paid: expected boolean"),
        (
            with(json!({"paid": null})),
            "/paid: expected boolean, got null",
        ),
        (
            with(json!({"amount": "12.345"})),
            "more than 2 fraction digits",
        ),
        (
            with(json!({"amount": "123456789.00"})),
            "more than 10 digits",
        ),
        (with(json!({"amount": "12,50"})), "is not a decimal number"),
        (
            with(json!({"amount": 0.1234567890123456})),
            "more than 15 significant digits",
        ),
        (
            with(json!({"status": "VOID"})),
            "\"VOID\" is not a symbol of enum Status",
        ),
        (
            with(json!({"at": "2023-11-14 22:13:20"})),
            "no time zone offset",
        ),
        (
            with(json!({"at": "2023-11-14T22:13:20.1234Z"})),
            "more fraction digits",
        ),
        (
            with(json!({"at": "2023-02-30T00:00:00Z"})),
            "not an RFC 3339 timestamp",
        ),
        (
            with(json!({"customer": {"tags": []}})),
            "/customer/name: missing required field",
        ),
        (
            with(json!({"previous": {"name": "a", "tags": [1]}})),
            "/previous/tags/0: expected string",
        ),
        (
            with(json!({"attrs": {"k": "v"}})),
            "/attrs/k: expected long",
        ),
        (
            json!([1, 2]),
            "the body: expected an object (record Payment)",
        ),
    ];
    for (input, want) in cases {
        match s.convert(&input) {
            Ok(v) => panic!("{input} should not fit, got {v:?}"),
            Err(e) => assert!(e.contains(want), "{input}: `{e}` should contain `{want}`"),
        }
    }
}

#[test]
fn converted_values_encode_with_the_envelope_schema() {
    let s = schema();
    let parsed = Schema::parse_str(s.envelope().json()).expect("envelope parses");
    let Schema::Record(r) = &parsed else {
        panic!("record")
    };
    assert_eq!(r.name.fullname(None), "io.switchyard.webhook.CloudEvent");
    let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "data",
            "subject",
            "headers"
        ]
    );
    assert_eq!(s.record_name, "com.acme.Payment");
    let data = s
        .convert(&with(
            json!({"customer": {"name": "Zoë"}, "attrs": {"a": 1}}),
        ))
        .expect("fits");
    let envelope = Value::Record(vec![
        ("specversion".into(), Value::String("1.0".into())),
        ("id".into(), Value::String("e".into())),
        ("source".into(), Value::String("switchyard/s".into())),
        ("type".into(), Value::String("t".into())),
        ("time".into(), Value::TimestampMicros(1)),
        (
            "datacontenttype".into(),
            Value::String("application/json".into()),
        ),
        ("data".into(), data),
        ("subject".into(), Value::Union(0, Box::new(Value::Null))),
        ("headers".into(), Value::Map(HashMap::new())),
    ]);
    s.envelope()
        .encode_locally(envelope)
        .expect("the converted value encodes");
}

#[test]
fn schemas_that_are_not_records_or_invalid_are_refused() {
    let p = || PathBuf::from("x.avsc");
    assert!(
        ValueSchema::from_json(p(), "\"string\"")
            .unwrap_err()
            .contains("not an Avro record")
    );
    assert!(
        ValueSchema::from_json(p(), "{")
            .unwrap_err()
            .contains("not JSON")
    );
    let err = ValueSchema::from_json(
        p(),
        r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}"#,
    )
    .unwrap_err();
    assert!(err.contains("not a valid Avro schema"), "{err}");
}

#[test]
fn decimal_and_time_helpers_are_exact() {
    assert_eq!(unscaled("0.10", 5, 2), Ok(10));
    assert_eq!(unscaled("-0", 5, 2), Ok(0));
    assert_eq!(unscaled("1E+2", 5, 0), Ok(100));
    assert!(unscaled("0.001", 5, 2).is_err());
    assert_eq!(twos_complement(0), vec![0]);
    assert_eq!(twos_complement(128), vec![0, 128]);
    assert_eq!(twos_complement(-1), vec![0xFF]);
    assert_eq!(twos_complement(-129), vec![0xFF, 0x7F]);
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2000-03-01"), Some(11_017));
    assert_eq!(parse_date("1969-12-31"), Some(-1));
    assert_eq!(parse_date("2024-02-29"), Some(19_782));
    assert_eq!(parse_date("2023-02-29"), None);
    assert_eq!(parse_time("00:00:01.5", 1_000), Some(1_500));
    assert_eq!(
        parse_time("23:59:59.999999", 1_000_000),
        Some(86_399_999_999)
    );
    assert_eq!(parse_time("00:00:00.0001", 1_000), None);
    assert_eq!(
        parse_timestamp("1969-12-31T23:59:59Z", 1_000, false),
        Ok(-1_000)
    );
    assert_eq!(
        parse_timestamp("2024-05-01T12:00:00", 1_000_000, true),
        Ok(1_714_564_800_000_000)
    );
}
