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
        tx_id: Some(747),
        lsn: Some(0x16_B374_D848),
        snapshot: "false",
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
    let env = t.envelope(Some(before), Some(after), "u", &src(), 1_730_796_578_000);
    assert!(env.validate(&schema), "{env:?}");
    let delete = t.envelope(
        Some(
            t.row(&Tuple(vec![text("1"), Datum::Null, Datum::Null]))
                .unwrap(),
        ),
        None,
        "d",
        &src(),
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
