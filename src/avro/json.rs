//! Avro values as JSON, for people reading records: `switchyard tail`, `route test`, the dry
//! run of a replay and the tests' consumer. Decimals print exactly with their scale, bytes as
//! hex, unions as their branch.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::json;

/// An Avro value as JSON, read with its schema: decimals become exact decimal strings with
/// the schema's scale (`"12.50"`); everything else as [`avro_to_json`].
pub fn avro_to_json_typed(value: Value, schema: &Schema) -> serde_json::Value {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    typed(value, schema, &names)
}

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<String, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema);
        }
        _ => {}
    }
}

fn typed(value: Value, schema: &Schema, names: &HashMap<String, &Schema>) -> serde_json::Value {
    let schema = match schema {
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(s) => *s,
            None => return avro_to_json(value),
        },
        s => s,
    };
    match (value, schema) {
        (Value::Decimal(d), Schema::Decimal(ds)) => decimal_text(&d, ds.scale),
        (Value::Union(i, v), Schema::Union(u)) => match u.variants().get(i as usize) {
            Some(s) => typed(*v, s, names),
            None => avro_to_json(*v),
        },
        (Value::Record(fields), Schema::Record(r)) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| {
                    let field = r.lookup.get(&k).and_then(|i| r.fields.get(*i));
                    let v = match field {
                        Some(f) => typed(v, &f.schema, names),
                        None => avro_to_json(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        (Value::Map(entries), Schema::Map(m)) => serde_json::Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, typed(v, &m.types, names)))
                .collect(),
        ),
        (Value::Array(items), Schema::Array(a)) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|v| typed(v, &a.items, names))
                .collect(),
        ),
        (v, _) => avro_to_json(v),
    }
}

/// A two's-complement unscaled decimal as text with `scale` fraction digits.
fn decimal_text(d: &apache_avro::Decimal, scale: usize) -> serde_json::Value {
    let Ok(bytes) = Vec::<u8>::try_from(d) else {
        return serde_json::Value::Null;
    };
    if bytes.len() > 16 {
        return json!({"unscaled_hex": hex::encode(&bytes), "scale": scale});
    }
    let mut v: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in &bytes {
        v = (v << 8) | i128::from(*b);
    }
    let digits = format!("{:0>width$}", v.unsigned_abs(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        json!(format!("{sign}{int}"))
    } else {
        json!(format!("{sign}{int}.{frac}"))
    }
}

/// An Avro value as JSON; byte arrays as hex strings, unions as their branch.
pub fn avro_to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => json!(i),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => json!(l),
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Bytes(b) | Value::Fixed(_, b) => json!(hex::encode(b)),
        Value::String(s) | Value::Enum(_, s) => json!(s),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Union(_, v) => avro_to_json(*v),
        Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(avro_to_json).collect())
        }
        Value::Map(m) => {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, avro_to_json(v))).collect())
        }
        Value::Record(fields) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect(),
        ),
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_exactly_with_their_scale() {
        let text = |unscaled: i64, scale| {
            let bytes = unscaled.to_be_bytes().to_vec();
            decimal_text(&apache_avro::Decimal::from(bytes), scale)
        };
        assert_eq!(text(1250, 2), json!("12.50"));
        assert_eq!(text(-999_999_999_999, 4), json!("-99999999.9999"));
        assert_eq!(text(5, 3), json!("0.005"));
        assert_eq!(text(-5, 3), json!("-0.005"));
        assert_eq!(text(42, 0), json!("42"));
    }

    #[test]
    fn values_are_read_through_named_references() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [
                {"name": "before", "type": ["null", {"type": "record", "name": "V", "fields": [
                    {"name": "n", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}}]}]},
                {"name": "after", "type": ["null", "V"]}]}"#,
        )
        .expect("schema");
        let row = |n: Vec<u8>| {
            Value::Union(
                1,
                Box::new(Value::Record(vec![(
                    "n".into(),
                    Value::Decimal(apache_avro::Decimal::from(n)),
                )])),
            )
        };
        let value = Value::Record(vec![
            ("before".into(), row(vec![0x04, 0xe2])),
            ("after".into(), row(vec![0xfb, 0x1e])),
        ]);
        assert_eq!(
            avro_to_json_typed(value, &schema),
            json!({"before": {"n": "12.50"}, "after": {"n": "-12.50"}})
        );
    }
}
