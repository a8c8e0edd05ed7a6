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
use std::sync::{Arc, OnceLock};

use cel::common::traits::{Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{CelDouble, CelMap, CelMapKey, CelNull, CelString, MAP_TYPE, Type};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::Key;
use cel::{Context, ExecutionError, Program, Value};

use crate::debezium::types::{ColumnType, column_type};
use crate::event::{ChangeColumn, ChangePayload, Event, Payload, WebhookPayload};

pub use crate::config::filter::{CHANGE_VARS, WEBHOOK_VARS, check, compile};

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
    pub(crate) fn merge(&mut self, other: &Needs) {
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

thread_local! {
    /// The standard functions, built once per thread; each evaluation adds its variables in
    /// an inner scope.
    static ROOT: Context<'static, 'static> = Context::default();
}

/// One event's variables, built once and shared by every filter of its source. Rows and
/// strings borrow the event: nothing is copied until a filter reads it.
pub struct Vars<'e>(Vec<(&'static str, Box<dyn Val + 'e>)>);

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.0
            .iter()
            .find(|(name, _)| *name == variable)
            .map(|(_, v)| CowVal::Borrowed(v.as_ref()))
    }
}

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

/// `value` as the interpreter holds it.
fn boxed(value: Value) -> Box<dyn Val> {
    let converted: Result<Box<dyn Val>, _> = value.try_into();
    converted.unwrap_or_else(|_| Box::new(CelNull))
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

/// A row (`before` or `after`) as filters see it: a map of column name to typed value.
///
/// A column's value is parsed when a filter reads it (`after.amount`); only that is built per
/// event. Whatever needs the whole map (`size`, comprehensions, `in`, equality, a copy) gets a
/// real CEL map, built once per event on first use, so the view answers exactly as the map
/// would. [`vars`] only hands out the view when every filter of the source reads rows by
/// `.column` (see [`Needs`]); otherwise it builds the map up front.
#[derive(Debug)]
struct Row<'e> {
    columns: &'e [ChangeColumn],
    values: &'e [Option<String>],
    /// Only the key is known (a `before` without `REPLICA IDENTITY FULL`): the other columns
    /// read as null.
    key_only: bool,
    whole: OnceLock<CelMap<'e>>,
}

impl<'e> Row<'e> {
    fn new(c: &'e ChangePayload, values: &'e [Option<String>], key_only: bool) -> Row<'e> {
        Row {
            columns: &c.columns,
            values,
            key_only,
            whole: OnceLock::new(),
        }
    }

    /// Columns that have a value (the shorter of columns and values, as a zip).
    fn len(&self) -> usize {
        self.columns.len().min(self.values.len())
    }

    /// The typed value of column `i`: numbers as numbers, numeric as double (comparable with
    /// numbers), text borrowed, NULL as null, a value that does not parse as its text.
    fn value(&self, i: usize) -> Box<dyn Val + 'e> {
        let col = &self.columns[i];
        let text = match &self.values[i] {
            Some(text) if col.is_key || !self.key_only => text.as_str(),
            _ => return Box::new(CelNull),
        };
        match column_type(col.type_oid, col.type_modifier) {
            ColumnType::String { .. } => Box::new(CelString::from(text)),
            ColumnType::Decimal { .. } => match text.parse::<f64>() {
                Ok(f) => Box::new(CelDouble::from(f)),
                Err(_) => Box::new(CelString::from(text)),
            },
            ty => boxed(ty.parse(text).map(from_avro).unwrap_or_else(|_| s(text))),
        }
    }

    /// The whole row as a CEL map, built on first use.
    fn whole(&self) -> &CelMap<'e> {
        self.whole.get_or_init(|| {
            let entries: HashMap<CelMapKey<'e>, Box<dyn Val + 'e>> = (0..self.len())
                .map(|i| {
                    (
                        CelMapKey::from(self.columns[i].name.as_str()),
                        self.value(i),
                    )
                })
                .collect();
            CelMap::from(entries)
        })
    }
}

impl<'e> Val for Row<'e> {
    fn get_type(&self) -> &Type {
        <Self as Val>::cel_type()
    }

    fn cel_type() -> &'static Type {
        &MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        self.whole().as_container()
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
    where
        Self: 'w,
    {
        self.whole().as_iterable()
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        self.whole().as_sizer()
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        self.whole().as_zeroer()
    }

    fn equals(&self, other: &dyn Val) -> bool {
        self.whole().equals(other)
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(self.whole().clone())
    }
}

impl Indexer for Row<'_> {
    fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        if let Some(name) = idx.downcast_ref::<CelString>()
            && let Some(i) = (0..self.len()).rfind(|i| self.columns[*i].name == name.inner())
        {
            return Ok(CowVal::Owned(self.value(i)));
        }
        // A missing column or a key that is not a string: as the map answers.
        self.whole().get(idx)
    }

    fn steal<'w>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

/// `before` or `after`: null without a row, a lazy view when the filters only read
/// `row.column`, else the whole map.
fn row<'e>(
    c: &'e ChangePayload,
    values: Option<&'e [Option<String>]>,
    key_only: bool,
    needs: &Needs,
) -> Box<dyn Val + 'e> {
    let Some(values) = values else {
        return Box::new(CelNull);
    };
    let row = Row::new(c, values, key_only);
    if needs.columns.is_some() {
        return Box::new(row);
    }
    row.whole();
    match row.whole.into_inner() {
        Some(map) => Box::new(map),
        None => Box::new(CelNull),
    }
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
pub fn vars<'e>(event: &'e Event, needs: &Needs) -> Vars<'e> {
    let want = |v: &str| needs.vars.contains(v);
    let mut out: Vec<(&'static str, Box<dyn Val + 'e>)> = Vec::with_capacity(4);
    match &event.payload {
        Payload::Change(c) => {
            if want("op") {
                let op = if c.op == crate::event::ChangeOp::Tombstone {
                    "d"
                } else {
                    c.op.code()
                };
                out.push(("op", Box::new(CelString::from(op))));
            }
            if want("before") {
                out.push((
                    "before",
                    row(c, c.before.as_deref(), c.before_key_only, needs),
                ));
            }
            if want("after") {
                out.push(("after", row(c, c.after.as_deref(), false, needs)));
            }
            if want("source") {
                out.push((
                    "source",
                    boxed(map(vec![
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
                            s(if c.op == crate::event::ChangeOp::Read {
                                "true"
                            } else {
                                "false"
                            }),
                        ),
                    ])),
                ));
            }
        }
        Payload::Message(m) => {
            for name in ["op", "before", "after", "source"] {
                if !want(name) {
                    continue;
                }
                out.push(match name {
                    "op" => ("op", Box::new(CelString::from("m"))),
                    "source" => (
                        "source",
                        boxed(map(vec![
                            ("db".into(), s(&m.database)),
                            ("name".into(), s(&event.source)),
                            ("prefix".into(), s(&m.prefix)),
                        ])),
                    ),
                    "before" => ("before", Box::new(CelNull)),
                    _ => ("after", Box::new(CelNull)),
                });
            }
        }
        Payload::Webhook(w) => {
            if want("type") {
                out.push(("type", Box::new(CelString::from(event.event_type.as_str()))));
            }
            if want("id") {
                out.push(("id", Box::new(CelString::from(event.id.as_str()))));
            }
            if want("data") {
                out.push(("data", boxed(webhook_data(w))));
            }
            if want("headers") {
                out.push((
                    "headers",
                    boxed(map(w
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), s(v)))
                        .collect())),
                ));
            }
        }
    }
    Vars(out)
}

/// True when `program` holds for the event whose variables are `vars`.
pub fn holds(program: &Program, vars: &Vars<'_>) -> bool {
    with_scope(vars, |holds| holds(program))
}

/// Runs `f` with a test of "this filter holds for the event of `vars`", all filters sharing
/// one scope (the variables are looked up in `vars`, not copied into the scope).
pub(crate) fn with_scope<R>(vars: &Vars<'_>, f: impl FnOnce(&dyn Fn(&Program) -> bool) -> R) -> R {
    ROOT.with(|root| {
        let mut scope = root.new_inner_scope();
        scope.set_variable_resolver(vars);
        f(&|p: &Program| matches!(p.execute(&scope), Ok(Value::Bool(true))))
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
                op: crate::event::ChangeOp::from_code(op).expect("an op code"),
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
                position: Default::default(),
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

    /// The needs of `exprs` together, as the route table merges them per source.
    fn needs_of(exprs: &[&str]) -> Needs {
        let mut n = Needs::default();
        for e in exprs {
            n.merge(&Needs::of(e, &compile(e, true).expect(e), true));
        }
        n
    }

    #[test]
    fn rows_read_by_column_answer_as_the_whole_map_does() {
        let numeric = (10 << 16 | 2) + 4;
        let mut e = change(
            "u",
            &[
                ("id", 20, -1, Some("7")),
                ("amount", 1700, numeric, Some("150.50")),
                ("status", 25, -1, Some("paid")),
                ("gone", 25, -1, None),
                ("created", 1114, -1, Some("2026-11-22 10:00:00")),
                ("tags", 1009, -1, Some("{a,b}")),
                ("odd", 1700, numeric, Some("NaN-ish")),
            ],
        );
        if let Payload::Change(c) = &mut e.payload {
            c.before = c.after.clone();
            c.before_key_only = true;
        }
        let cases = [
            ("after.amount > 100 && after.status != 'draft'", true),
            (
                "after.amount == 150.5 && after.id == 7 && after.id > 6.5",
                true,
            ),
            (
                "after.gone == null && has(after.gone) && !has(after.nope)",
                true,
            ),
            ("after.missing > 1", false),
            (
                "after.created > 0 && after.tags.size() == 2 && 'b' in after.tags",
                true,
            ),
            ("after.odd == 'NaN-ish'", true),
            ("before.id == 7 && before.status == null", true),
            ("after.size() == 7", true),
        ];
        for (expr, want) in cases {
            let p = compile(expr, true).expect(expr);
            let lazy = needs_of(&[expr]);
            assert!(lazy.columns.is_some(), "{expr} reads rows by column");
            assert_eq!(holds(&p, &vars(&e, &lazy)), want, "{expr} (by column)");
            assert_eq!(
                holds(&p, &vars(&e, &Needs::all())),
                want,
                "{expr} (whole row)"
            );
        }
        // Whole-row expressions get the map itself.
        for (expr, want) in [
            ("after['status'] == 'paid' && size(after) == 7", true),
            ("{'id': 7} == {'id': before.id} && before != after", true),
            ("after == after", true),
        ] {
            let p = compile(expr, true).expect(expr);
            assert!(needs_of(&[expr]).columns.is_none(), "{expr}");
            assert_eq!(holds(&p, &vars(&e, &needs_of(&[expr]))), want, "{expr}");
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
                headers: vec![("User-Agent".into(), "Stripe/1.0".into())].into(),
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
                    headers: Default::default(),
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
