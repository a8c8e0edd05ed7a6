//! The envelope is valid Avro, named as Debezium names it, and carries rows faithfully.

use apache_avro::Schema;

use super::*;

fn orders() -> TableSchema {
    TableSchema {
        source: "app-db".into(),
        database: "app".into(),
        schema: "public".into(),
        table: "orders".into(),
        doc: Some("Customer orders".into()),
        columns: vec![
            TableColumn {
                name: "id".into(),
                ty: ColumnType::Long,
                nullable: false,
                is_key: true,
                doc: None,
            },
            TableColumn {
                name: "total".into(),
                ty: ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                nullable: true,
                is_key: false,
                doc: Some("Gross, in EUR".into()),
            },
            TableColumn {
                name: "note".into(),
                ty: ColumnType::String { connect_name: None },
                nullable: true,
                is_key: false,
                doc: None,
            },
        ],
    }
}

fn text(s: &str) -> Datum {
    Datum::Text(s.as_bytes().to_vec())
}

fn src() -> SourceInfo {
    SourceInfo {
        ts_ms: 1_730_796_577_000,
        ts_us: 1_730_796_577_000_123,
        tx_id: Some(747),
        lsn: Some(0x16_B374_D848),
        snapshot: "false",
        sequence: Some(sequence(Some(26_664_384), Some(26_664_440))),
        transaction: Some(TransactionBlock::new(747, 26_664_440, 3, 2)),
    }
}

#[test]
fn schemas_parse_and_are_named_as_debezium_names_them() {
    let t = orders();
    let value = t.value_schema();
    assert_eq!(value["name"], "Envelope");
    assert_eq!(
        value["namespace"], "app_db.public.orders",
        "Avro names: `-` becomes `_`"
    );
    let before = &value["fields"][0]["type"][1];
    assert_eq!(before["name"], "Value");
    assert_eq!(before["doc"], "Customer orders");
    assert_eq!(
        before["fields"][0]["type"], "long",
        "NOT NULL is a bare type"
    );
    assert_eq!(
        before["fields"][1]["type"][0], "null",
        "nullable is [null, T]"
    );
    assert_eq!(before["fields"][1]["doc"], "Gross, in EUR");
    assert_eq!(
        value["fields"][1]["type"][1], "app_db.public.orders.Value",
        "after is the same type"
    );
    assert_eq!(value["fields"][2]["type"]["name"], "Source");
    assert_eq!(
        value["fields"][2]["type"]["namespace"],
        "io.debezium.connector.postgresql"
    );
    Schema::parse_str(&value.to_string()).expect("the envelope schema is valid Avro");
    let key = t.key_schema();
    assert_eq!(key["name"], "Key");
    assert_eq!(key["fields"].as_array().map(Vec::len), Some(1));
    Schema::parse_str(&key.to_string()).expect("the key schema is valid Avro");
}

#[test]
fn an_update_envelope_validates_against_its_schema() {
    let t = orders();
    let schema = Schema::parse_str(&t.value_schema().to_string()).unwrap();
    let before = t
        .row(&Tuple(vec![text("1"), text("12.50"), Datum::Null]))
        .unwrap();
    let after = t
        .row(&Tuple(vec![text("1"), text("13.00"), text("gift ✓")]))
        .unwrap();
    let env = t.envelope(Some(before), Some(after), "u", src(), 1_730_796_578_000_000);
    assert!(env.validate(&schema), "{env:?}");
    let delete = t.envelope(
        Some(
            t.row(&Tuple(vec![text("1"), Datum::Null, Datum::Null]))
                .unwrap(),
        ),
        None,
        "d",
        src(),
        0,
    );
    assert!(delete.validate(&schema));
    let key_schema = Schema::parse_str(&t.key_schema().to_string()).unwrap();
    let key = t
        .key(&Tuple(vec![text("1"), Datum::Null, Datum::Null]))
        .unwrap();
    assert_eq!(key, Value::Record(vec![("id".into(), Value::Long(1))]));
    assert!(key.validate(&key_schema));
}

#[test]
fn rows_that_cannot_be_records_say_why() {
    let t = orders();
    assert_eq!(
        t.row(&Tuple(vec![text("1"), Datum::UnchangedToast, Datum::Null])),
        Err(RowError::Unchanged("total".into())),
        "an unchanged TOAST value is never turned into NULL"
    );
    assert_eq!(
        t.row(&Tuple(vec![Datum::Null, Datum::Null, Datum::Null])),
        Err(RowError::NullInNotNull("id".into()))
    );
    assert_eq!(
        t.row(&Tuple(vec![text("1")])),
        Err(RowError::Arity { got: 1, want: 3 })
    );
    assert!(matches!(
        t.row(&Tuple(vec![text("x"), Datum::Null, Datum::Null])),
        Err(RowError::Type { .. })
    ));
}

#[test]
fn avro_names_follow_debezium_sanitising() {
    assert_eq!(avro_name("order-lines"), "order_lines");
    assert_eq!(avro_name("2fa"), "_2fa");
    assert_eq!(avro_name("naïve"), "na_ve");
}

/// (name, Avro type) of a record schema's fields, in order.
fn fields(record: &Json) -> Vec<(String, Json)> {
    record["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["type"].clone(),
            )
        })
        .collect()
}

fn names(record: &Json) -> Vec<String> {
    fields(record).into_iter().map(|(n, _)| n).collect()
}

/// Every field Debezium 3.6.3's Postgres connector writes, in its order, with the Avro type
/// Confluent's AvroConverter gives its Connect type (optional: `["null", T]`, default null).
/// Read off the connector's JsonConverter schemas (schemas.enable=true, plugin.name=pgoutput).
#[test]
fn the_envelope_has_every_field_of_debezium_3_6_in_its_order_and_types() {
    let value = orders().value_schema();
    assert_eq!(
        names(&value),
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
    let f = fields(&value);
    let opt_long = json!(["null", "long"]);
    assert_eq!(f[4].1, json!("string"), "op");
    for (name, ty) in &f[5..] {
        assert_eq!(ty, &opt_long, "{name} is an optional long");
    }
    for field in value["fields"].as_array().expect("fields") {
        if field["type"][0] == "null" {
            assert!(
                field.get("default").is_some_and(Json::is_null),
                "{}: optional fields default to null",
                field["name"]
            );
        }
    }

    let source = &f[2].1;
    assert_eq!(source["name"], "Source");
    assert_eq!(source["namespace"], "io.debezium.connector.postgresql");
    let expected = [
        ("version", json!("string")),
        ("connector", json!("string")),
        ("name", json!("string")),
        ("ts_ms", json!("long")),
        ("snapshot", json!("string")),
        ("db", json!("string")),
        ("sequence", json!(["null", "string"])),
        ("ts_us", opt_long.clone()),
        ("ts_ns", opt_long.clone()),
        ("schema", json!("string")),
        ("table", json!("string")),
        ("txId", opt_long.clone()),
        ("lsn", opt_long.clone()),
        ("xmin", opt_long.clone()),
        ("origin", json!(["null", "string"])),
        ("origin_lsn", opt_long.clone()),
    ];
    let got = fields(source);
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for ((name, ty), (_, want)) in got.iter().zip(&expected) {
        assert_eq!(ty, want, "source.{name}");
    }
    for field in source["fields"].as_array().expect("fields") {
        if field["type"][0] == "null" {
            assert!(
                field.get("default").is_some_and(Json::is_null),
                "{}",
                field["name"]
            );
        }
    }

    let transaction = &f[3].1;
    assert_eq!(transaction[0], "null", "the transaction block is optional");
    let block = &transaction[1];
    assert_eq!(block["name"], "block");
    assert_eq!(block["namespace"], "event");
    assert_eq!(block["connect.name"], "event.block");
    assert_eq!(
        fields(block),
        [
            ("id".to_string(), json!("string")),
            ("total_order".to_string(), json!("long")),
            ("data_collection_order".to_string(), json!("long")),
        ]
    );

    let message = message_value_schema();
    assert_eq!(
        names(&message),
        ["op", "ts_ms", "source", "transaction", "message"],
        "Debezium's MessageValue (no ts_us/ts_ns of its own)"
    );
    assert_eq!(fields(&message)[2].1, *source);
    Schema::parse_str(&message.to_string()).expect("MessageValue is valid Avro");
}

#[test]
fn sequence_is_the_json_array_debezium_writes() {
    // Debezium 3.6.3, the second transaction after start: both LSNs as decimal strings.
    assert_eq!(
        sequence(Some(26_664_384), Some(26_664_440)),
        r#"["26664384","26664440"]"#
    );
    // Before the stream has read a commit.
    assert_eq!(sequence(None, Some(26_384_736)), r#"[null,"26384736"]"#);
    assert_eq!(sequence(None, None), "[null,null]");
    let lsn = 0xFFFF_FFFF_FFFF_FFFF_u64;
    let parsed: Json =
        serde_json::from_str(&sequence(Some(0x16_B374_D848), Some(lsn))).expect("a JSON array");
    assert_eq!(parsed, json!(["97500059720", "18446744073709551615"]));
}

#[test]
fn the_new_fields_carry_their_values() {
    let t = orders();
    let after = t
        .row(&Tuple(vec![text("1"), text("13.00"), Datum::Null]))
        .unwrap();
    let env = t.envelope(None, Some(after), "c", src(), 1_730_796_578_000_456);
    let Value::Record(top) = &env else {
        panic!("a record: {env:?}")
    };
    let get = |fields: &[(String, Value)], name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    let some = |v: Value| Value::Union(1, Box::new(v));
    let null = Value::Union(0, Box::new(Value::Null));
    assert_eq!(get(top, "ts_ms"), some(Value::Long(1_730_796_578_000)));
    assert_eq!(get(top, "ts_us"), some(Value::Long(1_730_796_578_000_456)));
    assert_eq!(
        get(top, "ts_ns"),
        some(Value::Long(1_730_796_578_000_456_000))
    );
    assert_eq!(
        get(top, "transaction"),
        some(Value::Record(vec![
            ("id".into(), Value::String("747:26664440".into())),
            ("total_order".into(), Value::Long(3)),
            ("data_collection_order".into(), Value::Long(2)),
        ]))
    );
    let Value::Record(source) = get(top, "source") else {
        panic!("source is a record")
    };
    assert_eq!(
        get(&source, "sequence"),
        some(Value::String(r#"["26664384","26664440"]"#.into()))
    );
    assert_eq!(get(&source, "ts_ms"), Value::Long(1_730_796_577_000));
    assert_eq!(
        get(&source, "ts_us"),
        some(Value::Long(1_730_796_577_000_123))
    );
    assert_eq!(
        get(&source, "ts_ns"),
        some(Value::Long(1_730_796_577_000_123_000))
    );
    assert_eq!(get(&source, "lsn"), some(Value::Long(0x16_B374_D848)));
    for name in ["xmin", "origin", "origin_lsn"] {
        assert_eq!(
            get(&source, name),
            null,
            "{name} is null, as in Debezium's default"
        );
    }
    // Values are in schema order (the positional writer relies on it) and validate.
    let schema_json = t.value_schema();
    let schema = Schema::parse_str(&schema_json.to_string()).unwrap();
    assert!(env.validate(&schema), "{env:?}");
    assert_eq!(
        top.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        names(&schema_json)
    );
    assert_eq!(
        source.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        names(&schema_json["fields"][2]["type"])
    );

    // Without a transaction block or sequence: nulls, still valid.
    let bare = SourceInfo {
        sequence: None,
        transaction: None,
        ..src()
    };
    let env = t.envelope(None, None, "t", bare, 0);
    assert!(env.validate(&schema));
    let Value::Record(top) = &env else {
        panic!("a record")
    };
    assert_eq!(get(top, "transaction"), null);

    // Messages carry the same source block and a null transaction.
    let message = message_value("app-db", "app", "outbox", b"hi", src(), 7);
    let message_schema = Schema::parse_str(&message_value_schema().to_string()).unwrap();
    assert!(message.validate(&message_schema), "{message:?}");
}

fn write(schema: &Schema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .expect("encodes")
}

/// `bytes` written with `writer`, read as `reader`.
fn read(writer: &Schema, reader: &Schema, bytes: &[u8]) -> Value {
    apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut &bytes[..]))
        .expect("resolves")
}

/// A consumer holding the schema registered before these fields existed reads new records
/// (FORWARD), and the new schema reads records written with the old one, with nulls (BACKWARD).
#[test]
fn the_added_fields_keep_old_and_new_schemas_compatible() {
    let t = orders();
    let new_json = t.value_schema();
    let mut old_json = new_json.clone();
    let added = ["transaction", "ts_us", "ts_ns"];
    let source_added = ["sequence", "ts_us", "ts_ns", "xmin", "origin", "origin_lsn"];
    let keep = |record: &mut Json, drop: &[&str]| {
        if let Some(fields) = record["fields"].as_array_mut() {
            fields.retain(|f| !drop.iter().any(|d| f["name"] == *d));
        }
    };
    keep(&mut old_json, &added);
    keep(&mut old_json["fields"][2]["type"], &source_added);
    assert_eq!(names(&old_json["fields"][2]["type"]).len(), 10);
    let old = Schema::parse_str(&old_json.to_string()).unwrap();
    let new = Schema::parse_str(&new_json.to_string()).unwrap();

    // A delete without a decimal: apache-avro's schema resolution neither follows the named
    // reference of `after` nor resolves decimals inside unions (its limits, not the schema's).
    let before = t
        .row(&Tuple(vec![text("1"), Datum::Null, text("n")]))
        .unwrap();
    let env = t.envelope(Some(before), None, "d", src(), 1_730_796_578_000_000);
    let bytes = write(&new, env);
    // FORWARD: the old reader skips the new fields.
    let Value::Record(old_value) = read(&new, &old, &bytes) else {
        panic!("a record")
    };
    assert_eq!(
        old_value
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["before", "after", "source", "op", "ts_ms"]
    );
    // BACKWARD: the new reader fills them with their defaults.
    let old_bytes = write(&old, Value::Record(old_value));
    let Value::Record(read_new) = read(&old, &new, &old_bytes) else {
        panic!("a record")
    };
    let null = Value::Union(0, Box::new(Value::Null));
    assert_eq!(read_new[3], ("transaction".to_string(), null.clone()));
    assert_eq!(read_new[6], ("ts_us".to_string(), null));
}
