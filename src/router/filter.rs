//! Route filters in CEL (the `cel` crate): compiled once when the configuration loads, then
//! evaluated per event against the variables of its source kind.
//!
//! - Change events: `op` (`c`, `u`, `d`, `r`, `t`, `m`), `before` and `after` (maps of column
//!   to typed value: numbers as numbers, numeric/decimal as double, timestamps as
//!   micros/strings as in the envelope), `source` (`db`, `schema`, `table`, `name`, `lsn`,
//!   `txId`, `ts_ms`, `snapshot`).
//! - Webhooks: `type`, `id`, `data` (the parsed body; a form's fields), `headers` (lowercase
//!   names).
//!
//! An expression that cannot be evaluated on an event (a missing field, a type mismatch) does
//! not hold for it: the route does not take the event.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::Key;
use cel::{Context, Program, Value};

use crate::event::{ChangePayload, Event, Payload, WebhookPayload};
use crate::source::postgres::types::ColumnType;

/// Variables of change events.
pub const CHANGE_VARS: &[&str] = &["op", "before", "after", "source"];
/// Variables of webhook events.
pub const WEBHOOK_VARS: &[&str] = &["type", "id", "data", "headers"];

/// Compiles `expr` and checks that it only names variables of its source kind.
pub fn compile(expr: &str, change: bool) -> Result<Program, String> {
    let program = Program::compile(expr).map_err(|e| e.to_string())?;
    let allowed = if change { CHANGE_VARS } else { WEBHOOK_VARS };
    for v in program.references().variables() {
        if !allowed.contains(&v) {
            return Err(format!(
                "`{v}` is not a field of {} events (they have {})",
                if change { "change" } else { "webhook" },
                allowed.join(", ")
            ));
        }
    }
    Ok(program)
}

/// What a set of filters reads of an event: only that is built per event. The default reads
/// nothing.
#[derive(Debug, Clone)]
pub struct Needs {
    vars: std::collections::BTreeSet<&'static str>,
    /// Columns of `before`/`after` read by name; `None`: all of them.
    columns: Option<std::collections::BTreeSet<String>>,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            vars: std::collections::BTreeSet::new(),
            columns: Some(std::collections::BTreeSet::new()),
        }
    }
}

impl Needs {
    /// What `expr` (already compiled for `change` events or not) reads.
    pub fn of(expr: &str, program: &Program, change: bool) -> Needs {
        let allowed = if change { CHANGE_VARS } else { WEBHOOK_VARS };
        let refs = program.references();
        let vars = allowed
            .iter()
            .copied()
            .filter(|v| refs.has_variable(v))
            .collect();
        let mut columns = Some(std::collections::BTreeSet::new());
        for row in ["after", "before"] {
            let mut rest = expr;
            while let Some(i) = rest.find(row) {
                let before_ok = rest[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
                let tail = &rest[i + row.len()..];
                rest = tail;
                if !before_ok || tail.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                match tail.strip_prefix('.') {
                    Some(field) => {
                        let name: String = field
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if let Some(set) = columns.as_mut() {
                            set.insert(name);
                        }
                    }
                    // `after['x']`, `size(after)`, …: every column.
                    None => columns = None,
                }
            }
        }
        Needs { vars, columns }
    }

    /// Both sets together.
    pub fn merge(&mut self, other: &Needs) {
        self.vars.extend(other.vars.iter().copied());
        self.columns = match (self.columns.take(), &other.columns) {
            (Some(mut a), Some(b)) => {
                a.extend(b.iter().cloned());
                Some(a)
            }
            _ => None,
        };
    }

    /// Everything (dry runs).
    pub fn all() -> Needs {
        Needs {
            vars: CHANGE_VARS.iter().chain(WEBHOOK_VARS).copied().collect(),
            columns: None,
        }
    }
}

/// [`compile`] without keeping the program (for `check`).
pub fn check(expr: &str, change: bool) -> Result<(), String> {
    compile(expr, change).map(|_| ())
}

thread_local! {
    /// The standard functions, built once per thread; each evaluation adds its variables in
    /// an inner scope.
    static ROOT: Context<'static, 'static> = Context::default();
}

/// One event's variables, built once and shared by every filter of its source.
pub struct Vars(Vec<(&'static str, Value)>);

fn s(text: &str) -> Value {
    Value::String(Arc::new(text.to_string()))
}

fn map(entries: Vec<(String, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k)), v))
        .collect();
    Value::Map(m.into())
}

fn from_avro(v: apache_avro::types::Value) -> Value {
    use apache_avro::types::Value as A;
    match v {
        A::Null => Value::Null,
        A::Boolean(b) => Value::Bool(b),
        A::Int(i) | A::Date(i) | A::TimeMillis(i) => Value::Int(i64::from(i)),
        A::Long(l)
        | A::TimeMicros(l)
        | A::TimestampMillis(l)
        | A::TimestampMicros(l)
        | A::LocalTimestampMillis(l)
        | A::LocalTimestampMicros(l) => Value::Int(l),
        A::Float(f) => Value::Float(f64::from(f)),
        A::Double(d) => Value::Float(d),
        A::String(t) | A::Enum(_, t) => s(&t),
        A::Bytes(b) | A::Fixed(_, b) => Value::Bytes(Arc::new(b)),
        A::Uuid(u) => s(&u.to_string()),
        A::Union(_, inner) => from_avro(*inner),
        A::Array(items) => Value::List(Arc::new(items.into_iter().map(from_avro).collect())),
        A::Record(fields) => map(fields.into_iter().map(|(k, v)| (k, from_avro(v))).collect()),
        A::Map(m) => map(m.into_iter().map(|(k, v)| (k, from_avro(v))).collect()),
        _ => Value::Null,
    }
}

fn row(c: &ChangePayload, values: Option<&[Option<String>]>, needs: &Needs) -> Value {
    let Some(values) = values else {
        return Value::Null;
    };
    let entries = c
        .columns
        .iter()
        .zip(values)
        .filter(|(col, _)| {
            needs
                .columns
                .as_ref()
                .is_none_or(|set| set.contains(&col.name))
        })
        .map(|(col, v)| {
            let value = match v {
                None => Value::Null,
                Some(text) => {
                    let ty = crate::source::postgres::types::column_type(
                        col.type_oid,
                        col.type_modifier,
                    );
                    match ty {
                        // Comparable with numbers in expressions.
                        ColumnType::Decimal { .. } => text
                            .parse::<f64>()
                            .map(Value::Float)
                            .unwrap_or_else(|_| s(text)),
                        _ => ty.parse(text).map(from_avro).unwrap_or_else(|_| s(text)),
                    }
                }
            };
            (col.name.clone(), value)
        })
        .collect();
    map(entries)
}

fn webhook_data(w: &WebhookPayload) -> Value {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&w.body) {
        return cel::to_value(json).unwrap_or(Value::Null);
    }
    let fields = form_urlencoded::parse(w.body.as_bytes())
        .map(|(k, v)| (k.into_owned(), s(&v)))
        .collect();
    map(fields)
}

/// The variables of `event` that `needs` names (all of them with [`Needs::all`]); each is
/// built only when named.
pub fn vars(event: &Event, needs: &Needs) -> Vars {
    let want = |v: &str| needs.vars.contains(v);
    let mut out = Vec::with_capacity(4);
    match &event.payload {
        Payload::Change(c) => {
            if want("op") {
                out.push((
                    "op",
                    s(if c.op == "tombstone" {
                        "d"
                    } else {
                        c.op.as_str()
                    }),
                ));
            }
            if want("before") {
                let before = if c.before_key_only {
                    // Only the key is known: other columns are absent, not zero.
                    let known: Vec<Option<String>> = c
                        .before
                        .iter()
                        .flatten()
                        .zip(c.columns.iter())
                        .map(|(v, col)| if col.is_key { v.clone() } else { None })
                        .collect();
                    row(c, Some(&known), needs)
                } else {
                    row(c, c.before.as_deref(), needs)
                };
                out.push(("before", before));
            }
            if want("after") {
                out.push(("after", row(c, c.after.as_deref(), needs)));
            }
            if want("source") {
                out.push((
                    "source",
                    map(vec![
                        ("db".into(), s(&c.database)),
                        ("schema".into(), s(&c.schema)),
                        ("table".into(), s(&c.table)),
                        ("name".into(), s(&event.source)),
                        (
                            "lsn".into(),
                            Value::Int(i64::try_from(c.commit_lsn).unwrap_or(i64::MAX)),
                        ),
                        ("txId".into(), Value::Int(i64::from(c.tx_id))),
                        ("ts_ms".into(), Value::Int(c.commit_time_ms)),
                        (
                            "snapshot".into(),
                            s(if c.op == "r" { "true" } else { "false" }),
                        ),
                    ]),
                ));
            }
        }
        Payload::Message(m) => {
            for name in ["op", "before", "after", "source"] {
                if !want(name) {
                    continue;
                }
                out.push(match name {
                    "op" => ("op", s("m")),
                    "source" => (
                        "source",
                        map(vec![
                            ("db".into(), s(&m.database)),
                            ("name".into(), s(&event.source)),
                            ("prefix".into(), s(&m.prefix)),
                        ]),
                    ),
                    "before" => ("before", Value::Null),
                    _ => ("after", Value::Null),
                });
            }
        }
        Payload::Webhook(w) => {
            if want("type") {
                out.push(("type", s(&event.event_type)));
            }
            if want("id") {
                out.push(("id", s(event.id.as_str())));
            }
            if want("data") {
                out.push(("data", webhook_data(w)));
            }
            if want("headers") {
                out.push((
                    "headers",
                    map(w
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), s(v)))
                        .collect()),
                ));
            }
        }
    }
    Vars(out)
}

/// True when `program` holds for the event whose variables are `vars`.
pub fn holds(program: &Program, vars: &Vars) -> bool {
    evaluate(&[Some(program)], vars)[0]
}

/// Evaluates several filters on one event in one scope (its variables are converted once);
/// `None` stands for "no filter" (holds).
pub fn evaluate(programs: &[Option<&Program>], vars: &Vars) -> Vec<bool> {
    ROOT.with(|root| {
        let mut scope = root.new_inner_scope();
        for (name, value) in &vars.0 {
            scope.add_variable_from_value(*name, value.clone());
        }
        programs
            .iter()
            .map(|p| match p {
                None => true,
                Some(p) => matches!(p.execute(&scope), Ok(Value::Bool(true))),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeColumn, EventId};

    fn change(op: &str, after: &[(&str, u32, i32, Option<&str>)]) -> Event {
        Event {
            id: EventId::from_lsn(1, 0),
            source: "appdb".into(),
            event_type: op.into(),
            received_at_micros: 0,
            payload: Payload::Change(ChangePayload {
                database: "app".into(),
                schema: "public".into(),
                table: "orders".into(),
                table_doc: None,
                op: op.into(),
                columns: after
                    .iter()
                    .map(|(n, oid, typmod, _)| ChangeColumn {
                        name: (*n).into(),
                        type_oid: *oid,
                        type_modifier: *typmod,
                        nullable: true,
                        is_key: *n == "id",
                        doc: None,
                    })
                    .collect(),
                before: None,
                after: Some(
                    after
                        .iter()
                        .map(|(_, _, _, v)| v.map(str::to_string))
                        .collect(),
                ),
                commit_lsn: 1,
                tx_id: 1,
                commit_time_ms: 0,
                unchanged_toast: vec![],
                before_key_only: false,
            }),
        }
    }

    #[test]
    fn change_filters_see_typed_columns_op_and_source() {
        let numeric = (10 << 16 | 2) + 4;
        let e = change(
            "c",
            &[
                ("id", 20, -1, Some("7")),
                ("amount", 1700, numeric, Some("150.50")),
                ("status", 25, -1, Some("paid")),
                ("note", 25, -1, Some("café ✓")),
                ("gone", 25, -1, None),
            ],
        );
        let v = vars(&e, &Needs::all());
        let cases = [
            ("after.amount > 100 && after.status != 'draft'", true),
            ("after.amount > 200", false),
            (
                "op == 'c' && source.table == 'orders' && source.schema == 'public'",
                true,
            ),
            ("after.note == 'café ✓'", true),
            ("after.gone == null", true),
            ("after.id == 7", true),
            ("after.missing > 1", false),
            ("before == null", true),
            ("after.status.startsWith('pa')", true),
        ];
        for (expr, want) in cases {
            let p = compile(expr, true).expect(expr);
            assert_eq!(holds(&p, &v), want, "{expr}");
        }
    }

    #[test]
    fn webhook_filters_see_type_data_and_headers() {
        let e = Event {
            id: EventId::from_provider("evt_1"),
            source: "stripe".into(),
            event_type: "payment_intent.succeeded".into(),
            received_at_micros: 0,
            payload: Payload::Webhook(WebhookPayload {
                path: "/".into(),
                content_type: None,
                headers: vec![("User-Agent".into(), "Stripe/1.0".into())],
                body: r#"{"data":{"object":{"amount":4200,"currency":"eur"}}}"#.into(),
                subject: None,
                selected_headers: vec![],
            }),
        };
        let v = vars(&e, &Needs::all());
        for (expr, want) in [
            (
                "data.data.object.amount >= 4200 && type.startsWith('payment_intent.')",
                true,
            ),
            ("headers['user-agent'].contains('Stripe')", true),
            ("data.data.object.currency == 'usd'", false),
            ("id == 'evt_1'", true),
        ] {
            let p = compile(expr, false).expect(expr);
            assert_eq!(holds(&p, &v), want, "{expr}");
        }
    }

    #[test]
    fn unknown_variables_and_syntax_errors_are_refused_at_load() {
        assert!(compile("after.amount >", true).is_err());
        let e = compile("data.x > 1", true).expect_err("data is a webhook field");
        assert!(e.contains("`data` is not a field of change events"), "{e}");
        assert!(compile("after.x > 1", false).is_err());
    }

    #[test]
    fn arbitrary_json_bodies_never_panic_the_filter() {
        let p = compile("data.a.b > 1 || type == 'x' || size(data) > 2", false).expect("compiles");
        let bodies = [
            "null",
            "[]",
            "[1,2,3]",
            "{}",
            r#"{"a":null}"#,
            r#"{"a":{"b":"x"}}"#,
            r#"{"a":{"b":1e308}}"#,
            r#"{"a":[{"b":1}]}"#,
            "\"text\"",
            "12",
            "not json",
            "a=1&b=2",
            "",
        ];
        for body in bodies {
            let e = Event {
                id: EventId::from_provider("x"),
                source: "s".into(),
                event_type: "t".into(),
                received_at_micros: 0,
                payload: Payload::Webhook(WebhookPayload {
                    path: "/".into(),
                    content_type: None,
                    headers: vec![],
                    body: body.into(),
                    subject: None,
                    selected_headers: vec![],
                }),
            };
            let _ = holds(&p, &vars(&e, &Needs::all()));
        }
    }

    #[test]
    fn filters_read_only_the_columns_they_name() {
        let expr = "after.amount > 100 && after.status != 'draft'";
        let p = compile(expr, true).expect("compiles");
        let mut n = Needs::default();
        n.merge(&Needs::of(expr, &p, true));
        assert_eq!(
            n.columns,
            Some(
                ["amount".to_string(), "status".to_string()]
                    .into_iter()
                    .collect()
            )
        );
        assert!(n.vars.contains("after") && !n.vars.contains("before"));
        let all = "size(after) > 2";
        let p = compile(all, true).expect("compiles");
        assert_eq!(
            Needs::of(all, &p, true).columns,
            None,
            "a whole row is read"
        );
    }
}
