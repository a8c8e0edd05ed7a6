//! A direct evaluator for the filters most routes have: comparisons of fields with literals
//! joined by `&&`, `||` and `!` (`after.amount > 100 && after.status != 'draft'`).
//!
//! The `cel` interpreter spends most of an evaluation on name resolution (each `after.amount`
//! is joined into a qualified name and tried against containers before the field is read).
//! This evaluator walks the same parsed expression, reads variables from the same [`Vars`],
//! and compares with the same `cel` value types and their own `compare`/`equals`: only the
//! walking is ours. Anything outside this subset (functions, macros, arithmetic, indexing,
//! lists, maps, `in`) is left to the interpreter. The unit tests check both give the same
//! answer on every expression shape and value kind it covers, including errors (a missing
//! field, a null row, mismatched types).

use std::cmp::Ordering;

use cel::common::ast::{Expr, LiteralValue};
use cel::common::types::CelString;
use cel::common::value::CowVal;
use cel::context::VariableResolver;

use super::filter::Vars;

/// A compiled filter in the subset.
#[derive(Debug)]
pub(crate) enum Fast {
    /// `a && b`.
    And(Box<Fast>, Box<Fast>),
    /// `a || b`.
    Or(Box<Fast>, Box<Fast>),
    /// `!a`.
    Not(Box<Fast>),
    /// A comparison of two operands.
    Cmp(Op, Operand, Operand),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A comparison operand.
#[derive(Debug)]
pub(crate) enum Operand {
    /// A literal of the expression.
    Literal(LiteralValue),
    /// A variable and the fields selected on it (`after.amount`: `after`, `[amount]`).
    Path(String, Vec<String>),
}

/// The subset form of `expr`, if it is in the subset.
pub(crate) fn compile(expr: &cel::IdedExpr) -> Option<Fast> {
    let Expr::Call(call) = &expr.expr else {
        return None;
    };
    if call.target.is_some() {
        return None;
    }
    let args = &call.args;
    let op = match (call.func_name.as_str(), args.len()) {
        ("_&&_", 2) => {
            return Some(Fast::And(
                Box::new(compile(&args[0])?),
                Box::new(compile(&args[1])?),
            ));
        }
        ("_||_", 2) => {
            return Some(Fast::Or(
                Box::new(compile(&args[0])?),
                Box::new(compile(&args[1])?),
            ));
        }
        ("!_", 1) => return Some(Fast::Not(Box::new(compile(&args[0])?))),
        ("_==_", 2) => Op::Eq,
        ("_!=_", 2) => Op::Ne,
        ("_<_", 2) => Op::Lt,
        ("_<=_", 2) => Op::Le,
        ("_>_", 2) => Op::Gt,
        ("_>=_", 2) => Op::Ge,
        _ => return None,
    };
    Some(Fast::Cmp(op, operand(&args[0])?, operand(&args[1])?))
}

fn operand(expr: &cel::IdedExpr) -> Option<Operand> {
    match &expr.expr {
        Expr::Literal(LiteralValue::Bytes(_)) => None,
        Expr::Literal(l) => Some(Operand::Literal(l.clone())),
        Expr::Ident(name) => Some(Operand::Path(name.clone(), Vec::new())),
        Expr::Select(select) if !select.test => {
            let mut fields = vec![select.field.clone()];
            let mut at = &select.operand.expr;
            loop {
                match at {
                    Expr::Ident(name) => {
                        fields.reverse();
                        return Some(Operand::Path(name.clone(), fields));
                    }
                    Expr::Select(inner) if !inner.test => {
                        fields.push(inner.field.clone());
                        at = &inner.operand.expr;
                    }
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// Why an evaluation has no value (the interpreter's error, whatever it says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Error;

impl Fast {
    /// True when the filter holds for the event of `vars`.
    pub(crate) fn holds(&self, vars: &Vars<'_>) -> bool {
        self.eval(vars) == Ok(true)
    }

    fn eval(&self, vars: &Vars<'_>) -> Result<bool, Error> {
        match self {
            // As the interpreter: the left side decides alone when it is false (true for
            // `||`); otherwise an error on the right is the result, and an error on the left
            // gives way to a deciding right side.
            Fast::And(a, b) => {
                let left = a.eval(vars);
                if left == Ok(false) {
                    return Ok(false);
                }
                match (left, b.eval(vars)?) {
                    (Ok(true), right) => Ok(right),
                    (_, false) => Ok(false),
                    _ => Err(Error),
                }
            }
            Fast::Or(a, b) => {
                let left = a.eval(vars);
                if left == Ok(true) {
                    return Ok(true);
                }
                match (left, b.eval(vars)?) {
                    (Ok(false), right) => Ok(right),
                    (_, true) => Ok(true),
                    _ => Err(Error),
                }
            }
            Fast::Not(a) => a.eval(vars).map(|v| !v),
            Fast::Cmp(op, l, r) => {
                let (l, r) = (l.value(vars)?, r.value(vars)?);
                let (l, r) = (l.as_ref(), r.as_ref());
                let ordered = |want: fn(Ordering) -> bool| {
                    l.as_comparer()
                        .ok_or(Error)?
                        .compare(r)
                        .map(want)
                        .map_err(|_| Error)
                };
                match op {
                    Op::Eq => Ok(l.equals(r)),
                    Op::Ne => Ok(!l.equals(r)),
                    Op::Lt => ordered(|o| o == Ordering::Less),
                    Op::Le => ordered(|o| o != Ordering::Greater),
                    Op::Gt => ordered(|o| o == Ordering::Greater),
                    Op::Ge => ordered(|o| o != Ordering::Less),
                }
            }
        }
    }
}

impl Operand {
    fn value<'b>(&'b self, vars: &'b Vars<'_>) -> Result<CowVal<'b, 'b>, Error> {
        match self {
            Operand::Literal(l) => Ok(l.to_val()),
            Operand::Path(name, fields) => {
                let mut value = vars.resolve(name).ok_or(Error)?;
                for field in fields {
                    let key = CelString::from(field.as_str());
                    let next = value
                        .as_ref()
                        .as_indexer()
                        .ok_or(Error)?
                        .get(&key)
                        .map_err(|_| Error)?
                        .into_owned();
                    value = CowVal::Owned(next);
                }
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeColumn, ChangePayload, Event, EventId, Payload};
    use crate::router::filter;

    fn event(
        op: &str,
        before: Option<[Option<&str>; 6]>,
        after: Option<[Option<&str>; 6]>,
    ) -> Event {
        let col = |name: &str, type_oid: u32, type_modifier: i32| ChangeColumn {
            name: name.into(),
            type_oid,
            type_modifier,
            nullable: name != "id",
            is_key: name == "id",
            doc: None,
        };
        let row = |r: [Option<&str>; 6]| r.iter().map(|v| v.map(str::to_string)).collect();
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
                columns: vec![
                    col("id", 20, -1),
                    col("amount", 1700, ((10 << 16) | 2) + 4),
                    col("status", 25, -1),
                    col("flag", 16, -1),
                    col("qty", 23, -1),
                    col("tags", 1009, -1),
                ]
                .into(),
                before: before.map(row),
                after: after.map(row),
                commit_lsn: 1,
                tx_id: 1,
                commit_time_ms: 0,
                unchanged_toast: vec![],
                before_key_only: op == "d",
                position: Default::default(),
            }),
        }
    }

    fn events() -> Vec<Event> {
        let full = [
            Some("7"),
            Some("150.00"),
            Some("paid"),
            Some("t"),
            Some("3"),
            Some("{a,b}"),
        ];
        let draft = [
            Some("8"),
            Some("100"),
            Some("draft"),
            Some("f"),
            Some("-1"),
            Some("{}"),
        ];
        let nulls = [Some("9"), None, None, None, None, None];
        let odd = [
            Some("10"),
            Some("NaN"),
            Some(""),
            Some("t"),
            Some("0"),
            None,
        ];
        vec![
            event("c", None, Some(full)),
            event("c", None, Some(draft)),
            event("u", Some(draft), Some(full)),
            event("u", Some(nulls), Some(nulls)),
            event("c", None, Some(odd)),
            event("d", Some(full), None),
        ]
    }

    /// Deterministic expressions of the subset: comparisons of paths and literals of every
    /// kind, nested in `&&`, `||` and `!`.
    fn expressions() -> Vec<String> {
        let operands = [
            "after.amount",
            "after.status",
            "after.id",
            "after.flag",
            "after.qty",
            "after.tags",
            "after.missing",
            "before.amount",
            "before.status",
            "before.id",
            "op",
            "source.table",
            "source.lsn",
            "100",
            "100.0",
            "150.5",
            "-1",
            "0u",
            "'draft'",
            "'paid'",
            "''",
            "true",
            "false",
            "null",
        ];
        let ops = ["==", "!=", "<", "<=", ">", ">="];
        let mut atoms = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % n
        };
        for _ in 0..400 {
            let (a, b) = (
                operands[next(operands.len())],
                operands[next(operands.len())],
            );
            atoms.push(format!("{a} {} {b}", ops[next(ops.len())]));
        }
        let mut out = atoms.clone();
        for _ in 0..1500 {
            let (a, b, c) = (
                &atoms[next(atoms.len())],
                &atoms[next(atoms.len())],
                &atoms[next(atoms.len())],
            );
            out.push(match next(9) {
                0 => format!("{a} && {b}"),
                1 => format!("{a} || {b}"),
                2 => format!("!({a})"),
                3 => format!("({a} || {b}) && !({c})"),
                4 => format!("!({a} && {b})"),
                5 => format!("!({a} || {b})"),
                6 => format!("({a} && {b}) || {c}"),
                7 => format!("!(!({a}) || {b} && {c})"),
                _ => format!("{a} && ({b} || {c})"),
            });
        }
        out
    }

    #[test]
    fn the_fast_path_answers_as_the_interpreter_on_every_shape_it_takes() {
        let events = events();
        let mut compared = 0;
        for expr in expressions() {
            let Ok(program) = filter::compile(&expr, true) else {
                continue;
            };
            let fast = compile(program.expression())
                .unwrap_or_else(|| panic!("`{expr}` is in the subset"));
            for needs in [
                filter::Needs::all(),
                filter::Needs::of(&expr, &program, true),
            ] {
                for e in &events {
                    let vars = filter::vars(e, &needs);
                    assert_eq!(
                        fast.holds(&vars),
                        filter::holds(&program, &vars),
                        "`{expr}` on {:?}",
                        e.payload
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 5_000, "only {compared} comparisons");
    }

    #[test]
    fn anything_else_is_left_to_the_interpreter() {
        for expr in [
            "after.amount + 1 > 100",
            "after.status in ['paid', 'draft']",
            "has(after.status)",
            "after.status.startsWith('p')",
            "size(after) > 2",
            "after['status'] == 'paid'",
            "after.flag",
            "true",
        ] {
            let program = filter::compile(expr, true).expect(expr);
            assert!(compile(program.expression()).is_none(), "{expr}");
        }
    }
}
