//! Typed webhook values: a route's `value_schema` (an Avro record in a `.avsc` file) replaces
//! the CloudEvent's `data` string with that record, converted from the JSON body.
//!
//! The envelope keeps every other CloudEvent field; only the type of `data` changes, to the
//! user's record (see [`ValueSchema::envelope`]). The schema is read and checked when the
//! configuration is loaded; conversion happens per event and is exact: a value that does not
//! fit (a missing field without default, a wrong type, an int out of range, a decimal with too
//! many digits) is an [`super::EncodeError::Encode`] and the event is dead-lettered (class
//! `encode`), never rounded or guessed.
//!
//! Rules, as documented in the README:
//! - fields missing from the JSON take their schema default; a missing field whose type is a
//!   union with `null` and has no default is null; otherwise it is an error;
//! - JSON fields the record does not name are ignored;
//! - unions take the first branch the value fits (`null` only for JSON null);
//! - `int`/`long` need integral numbers in range; `float`/`double` take any number (an integer
//!   beyond 2^53 is refused for `double`, as it would be rounded);
//! - `bytes`/`fixed` follow Avro's JSON encoding (each character U+0000–U+00FF is one byte);
//! - `decimal` from a string ("12.50") or a JSON number with at most 15 significant digits,
//!   with no more fraction digits than the scale and no more digits than the precision;
//! - `date` from days or "YYYY-MM-DD"; `time-*` from a count or "HH:MM:SS[.fff]";
//!   `timestamp-*` from a count since the epoch or RFC 3339 text ("2024-05-01T12:00:00Z");
//!   `uuid` from its text.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, Name};
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::AvroSchema;

/// A route's `value_schema`: the user's record and the CloudEvent envelope typed with it.
pub struct ValueSchema {
    /// The `.avsc` file, as resolved against the configuration's directory.
    pub path: PathBuf,
    /// Full name of the user's record (e.g. `com.acme.Payment`).
    pub record_name: String,
    envelope: AvroSchema,
    /// The schema of the envelope's `data` field (the user's record, as parsed in place).
    data: Schema,
    /// Named types of the envelope, to resolve references.
    names: HashMap<Name, Schema>,
}

impl fmt::Debug for ValueSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueSchema")
            .field("path", &self.path)
            .field("record_name", &self.record_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ValueSchema {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.envelope.json() == other.envelope.json()
    }
}

impl Eq for ValueSchema {}

impl ValueSchema {
    /// Reads and checks an `.avsc` file.
    pub fn load(path: &Path) -> Result<ValueSchema, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(path.to_path_buf(), &text)
    }

    /// Checks a schema given as JSON text (`path` only names it).
    pub fn from_json(path: PathBuf, text: &str) -> Result<ValueSchema, String> {
        let user: Json = serde_json::from_str(text).map_err(|e| {
            format!(
                "{} is not JSON (line {}, column {}): {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        if user.get("type").and_then(Json::as_str) != Some("record") {
            return Err(format!(
                "{} is not an Avro record schema (its top-level \"type\" must be \"record\")",
                path.display()
            ));
        }
        let mut envelope: Json = serde_json::from_str(super::CLOUDEVENT_SCHEMA_JSON)
            .map_err(|e| format!("the CloudEvent schema: {e}"))?;
        let data = envelope["fields"]
            .as_array_mut()
            .and_then(|fields| fields.iter_mut().find(|f| f["name"] == "data"))
            .ok_or("the CloudEvent schema has no data field")?;
        data["type"] = user;
        data["doc"] =
            Json::String("The request body, converted to the route's value_schema".into());
        let envelope_text = envelope.to_string();
        let parsed = Schema::parse_str(&envelope_text)
            .map_err(|e| format!("{} is not a valid Avro schema: {e}", path.display()))?;
        let Schema::Record(record) = &parsed else {
            return Err("the CloudEvent schema is not a record".into());
        };
        let data = record
            .fields
            .iter()
            .find(|f| f.name == "data")
            .map(|f| f.schema.clone())
            .ok_or("the CloudEvent schema has no data field")?;
        let record_name = data.name().map(|n| n.fullname(None)).unwrap_or_default();
        let names = apache_avro::schema::ResolvedSchema::try_from(&parsed)
            .map_err(|e| format!("{} is not a valid Avro schema: {e}", path.display()))?
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        Ok(ValueSchema {
            path,
            record_name,
            envelope: AvroSchema::from_json(&envelope_text),
            data,
            names,
        })
    }

    /// The value schema of the route's topic: the CloudEvent record (same name and fields)
    /// whose `data` field has the user's record type.
    pub fn envelope(&self) -> &AvroSchema {
        &self.envelope
    }

    /// Converts a JSON document into the user's record, exactly (see the module doc).
    pub(crate) fn convert(&self, json: &Json) -> Result<Value, String> {
        Converter { names: &self.names }.value(json, &self.data, &Loc::Root)
    }
}

/// Where in the JSON document a value is, for error messages (`/items/0/price`).
enum Loc<'a> {
    Root,
    Field(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Root => f.write_str(""),
            Loc::Field(p, name) => write!(f, "{p}/{name}"),
            Loc::Index(p, i) => write!(f, "{p}/{i}"),
        }
    }
}

fn at(loc: &Loc, message: impl fmt::Display) -> String {
    let place = loc.to_string();
    if place.is_empty() {
        format!("the body: {message}")
    } else {
        format!("{place}: {message}")
    }
}

/// A short description of a JSON value for messages.
fn shown(v: &Json) -> String {
    let kind = match v {
        Json::Null => return "null".into(),
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => return "an array".into(),
        Json::Object(_) => return "an object".into(),
    };
    let mut text = v.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(40).collect::<String>() + "…";
    }
    format!("{kind} {text}")
}

/// An integral JSON number, exactly.
fn integer(v: &Json) -> Option<i128> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0).then_some(f as i128)
}

struct Converter<'a> {
    names: &'a HashMap<Name, Schema>,
}

impl Converter<'_> {
    fn value(&self, v: &Json, schema: &Schema, loc: &Loc) -> Result<Value, String> {
        let wrong = |expected: &str| at(loc, format!("expected {expected}, got {}", shown(v)));
        match schema {
            Schema::Ref { name } => {
                let resolved = self
                    .names
                    .get(name)
                    .ok_or_else(|| at(loc, format!("unknown type {}", name.fullname(None))))?;
                self.value(v, resolved, loc)
            }
            Schema::Null => match v {
                Json::Null => Ok(Value::Null),
                _ => Err(wrong("null")),
            },
            Schema::Boolean => v
                .as_bool()
                .map(Value::Boolean)
                .ok_or_else(|| wrong("boolean")),
            Schema::Int => match integer(v) {
                Some(i) => i32::try_from(i)
                    .map(Value::Int)
                    .map_err(|_| at(loc, format!("{i} is out of range for int"))),
                None => Err(wrong("int")),
            },
            Schema::Long => match integer(v) {
                Some(i) => i64::try_from(i)
                    .map(Value::Long)
                    .map_err(|_| at(loc, format!("{i} is out of range for long"))),
                None => Err(wrong("long")),
            },
            Schema::Float => match v.as_f64() {
                Some(f) if (f as f32).is_finite() => Ok(Value::Float(f as f32)),
                Some(f) => Err(at(loc, format!("{f} is out of range for float"))),
                None => Err(wrong("float")),
            },
            Schema::Double => match v.as_number() {
                Some(n) if n.is_f64() => Ok(Value::Double(n.as_f64().unwrap_or_default())),
                Some(n) => {
                    let i = integer(v).unwrap_or_default();
                    if i.unsigned_abs() > 9_007_199_254_740_992 {
                        Err(at(loc, format!("{n} cannot be a double exactly")))
                    } else {
                        Ok(Value::Double(i as f64))
                    }
                }
                None => Err(wrong("double")),
            },
            Schema::String => v
                .as_str()
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| wrong("string")),
            Schema::Bytes => match v.as_str() {
                Some(s) => avro_json_bytes(s).map(Value::Bytes).map_err(|m| at(loc, m)),
                None => Err(wrong("bytes (a string)")),
            },
            Schema::Fixed(f) => match v.as_str() {
                Some(s) => {
                    let bytes = avro_json_bytes(s).map_err(|m| at(loc, m))?;
                    if bytes.len() == f.size {
                        Ok(Value::Fixed(f.size, bytes))
                    } else {
                        Err(at(
                            loc,
                            format!(
                                "fixed {} needs {} bytes, got {}",
                                f.name.name(),
                                f.size,
                                bytes.len()
                            ),
                        ))
                    }
                }
                None => Err(wrong("fixed (a string)")),
            },
            Schema::Enum(e) => match v.as_str() {
                Some(s) => match e.symbols.iter().position(|x| x == s) {
                    Some(i) => Ok(Value::Enum(i as u32, s.to_string())),
                    None => Err(at(
                        loc,
                        format!(
                            "\"{s}\" is not a symbol of enum {} ({})",
                            e.name.name(),
                            e.symbols.join(", ")
                        ),
                    )),
                },
                None => Err(wrong(&format!("a symbol of enum {}", e.name.name()))),
            },
            Schema::Array(a) => match v.as_array() {
                Some(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, &a.items, &Loc::Index(loc, i)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                None => Err(wrong("an array")),
            },
            Schema::Map(m) => match v.as_object() {
                Some(obj) => obj
                    .iter()
                    .map(|(k, item)| {
                        Ok((k.clone(), self.value(item, &m.types, &Loc::Field(loc, k))?))
                    })
                    .collect::<Result<HashMap<_, _>, String>>()
                    .map(Value::Map),
                None => Err(wrong("an object (map)")),
            },
            Schema::Union(u) => {
                let variants = u.variants();
                if v.is_null() {
                    return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                        Some(i) => Ok(Value::Union(i as u32, Box::new(Value::Null))),
                        None => Err(at(loc, "null is not allowed here")),
                    };
                }
                let mut reasons = Vec::new();
                for (i, s) in variants.iter().enumerate() {
                    if matches!(s, Schema::Null) {
                        continue;
                    }
                    match self.value(v, s, loc) {
                        Ok(x) => return Ok(Value::Union(i as u32, Box::new(x))),
                        Err(e) => reasons.push(e),
                    }
                }
                match reasons.as_slice() {
                    [one] => Err(one.clone()),
                    _ => Err(at(
                        loc,
                        format!(
                            "{} fits none of the union's types ({})",
                            shown(v),
                            reasons.join("; ")
                        ),
                    )),
                }
            }
            Schema::Record(r) => {
                let Some(obj) = v.as_object() else {
                    return Err(wrong(&format!("an object (record {})", r.name.name())));
                };
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let here = Loc::Field(loc, &f.name);
                    let value = match (obj.get(&f.name), &f.default) {
                        (Some(x), _) => self.value(x, &f.schema, &here)?,
                        (None, Some(default)) => self.default(default, &f.schema, &here)?,
                        (None, None) if self.nullable(&f.schema) => {
                            self.value(&Json::Null, &f.schema, &here)?
                        }
                        (None, None) => {
                            return Err(at(&here, "missing required field (it has no default)"));
                        }
                    };
                    fields.push((f.name.clone(), value));
                }
                Ok(Value::Record(fields))
            }
            Schema::Decimal(d) => self.decimal(v, d, loc),
            Schema::Uuid(_) => match v.as_str() {
                Some(s) => apache_avro::Uuid::parse_str(s)
                    .map(Value::Uuid)
                    .map_err(|e| at(loc, format!("\"{s}\" is not a UUID: {e}"))),
                None => Err(wrong("a UUID string")),
            },
            Schema::Date => match (integer(v), v.as_str()) {
                (Some(d), _) => i32::try_from(d)
                    .map(Value::Date)
                    .map_err(|_| at(loc, format!("{d} days is out of range"))),
                (None, Some(s)) => parse_date(s)
                    .and_then(|d| i32::try_from(d).ok())
                    .map(Value::Date)
                    .ok_or_else(|| at(loc, format!("\"{s}\" is not a date (YYYY-MM-DD)"))),
                _ => Err(wrong("a date (days or \"YYYY-MM-DD\")")),
            },
            Schema::TimeMillis => {
                let ms = self.time_of_day(v, 1_000, loc)?;
                Ok(Value::TimeMillis(ms as i32))
            }
            Schema::TimeMicros => {
                let us = self.time_of_day(v, 1_000_000, loc)?;
                Ok(Value::TimeMicros(us as i64))
            }
            Schema::TimestampMillis => self
                .timestamp(v, 1_000, false, loc)
                .map(Value::TimestampMillis),
            Schema::TimestampMicros => self
                .timestamp(v, 1_000_000, false, loc)
                .map(Value::TimestampMicros),
            Schema::TimestampNanos => self
                .timestamp(v, 1_000_000_000, false, loc)
                .map(Value::TimestampNanos),
            Schema::LocalTimestampMillis => self
                .timestamp(v, 1_000, true, loc)
                .map(Value::LocalTimestampMillis),
            Schema::LocalTimestampMicros => self
                .timestamp(v, 1_000_000, true, loc)
                .map(Value::LocalTimestampMicros),
            Schema::LocalTimestampNanos => self
                .timestamp(v, 1_000_000_000, true, loc)
                .map(Value::LocalTimestampNanos),
            Schema::BigDecimal | Schema::Duration(_) => Err(at(
                loc,
                "big-decimal and duration are not converted from JSON; use decimal or long",
            )),
        }
    }

    /// A field default: Avro writes a union's default in its first branch's type.
    fn default(&self, default: &Json, schema: &Schema, loc: &Loc) -> Result<Value, String> {
        if let Schema::Union(u) = schema
            && let Some(first) = u.variants().first()
        {
            let v = self.value(default, first, loc)?;
            return Ok(Value::Union(0, Box::new(v)));
        }
        self.value(default, schema, loc)
    }

    fn nullable(&self, schema: &Schema) -> bool {
        matches!(schema, Schema::Union(u) if u.variants().iter().any(|s| matches!(s, Schema::Null)))
    }

    fn decimal(&self, v: &Json, d: &DecimalSchema, loc: &Loc) -> Result<Value, String> {
        let text = match v {
            Json::String(s) => s.clone(),
            Json::Number(n) if n.is_f64() => {
                let t = n.to_string();
                if significant_digits(&t) > 15 {
                    return Err(at(
                        loc,
                        format!(
                            "the JSON number {t} has more than 15 significant digits and may have been rounded; send the decimal as a string"
                        ),
                    ));
                }
                t
            }
            Json::Number(n) => n.to_string(),
            _ => {
                return Err(at(
                    loc,
                    format!("expected a decimal (string or number), got {}", shown(v)),
                ));
            }
        };
        let unscaled = unscaled(&text, d.precision, d.scale).map_err(|m| at(loc, m))?;
        let bytes = twos_complement(unscaled);
        if let InnerDecimalSchema::Fixed(f) = &d.inner
            && bytes.len() > f.size
        {
            return Err(at(loc, format!("{text} does not fit in fixed({})", f.size)));
        }
        Ok(Value::Decimal(apache_avro::Decimal::from(bytes)))
    }

    fn time_of_day(&self, v: &Json, per_second: i128, loc: &Loc) -> Result<i128, String> {
        let n = match (integer(v), v.as_str()) {
            (Some(n), _) => n,
            (None, Some(s)) => parse_time(s, per_second).ok_or_else(|| {
                at(
                    loc,
                    format!("\"{s}\" is not a time of day (HH:MM:SS[.fff])"),
                )
            })?,
            _ => return Err(at(loc, format!("expected a time of day, got {}", shown(v)))),
        };
        if (0..86_400 * per_second).contains(&n) {
            Ok(n)
        } else {
            Err(at(loc, format!("{n} is not within a day")))
        }
    }

    fn timestamp(&self, v: &Json, per_second: i128, local: bool, loc: &Loc) -> Result<i64, String> {
        let n = match (integer(v), v.as_str()) {
            (Some(n), _) => n,
            (None, Some(s)) => parse_timestamp(s, per_second, local).map_err(|m| at(loc, m))?,
            _ => {
                return Err(at(
                    loc,
                    format!(
                        "expected a timestamp (a number or RFC 3339 text), got {}",
                        shown(v)
                    ),
                ));
            }
        };
        i64::try_from(n).map_err(|_| at(loc, format!("{n} is out of range for a timestamp")))
    }
}

/// Avro's JSON encoding of bytes: one character per byte, U+0000 to U+00FF.
fn avro_json_bytes(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| {
                format!(
                    "'{c}' is not a byte: bytes are written one character (U+0000–U+00FF) per byte"
                )
            })
        })
        .collect()
}

fn significant_digits(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0').trim_end_matches('0');
    trimmed.len().max(1)
}

/// The unscaled integer of decimal text at `scale`, refusing any rounding.
fn unscaled(text: &str, precision: usize, scale: usize) -> Result<i128, String> {
    let bad = || format!("\"{text}\" is not a decimal number");
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut digits = format!("{int}{frac}");
    if digits.bytes().all(|b| b == b'0') {
        return Ok(0);
    }
    // value = digits × 10^shift, and the unscaled value is value × 10^scale.
    let shift = exponent - frac.len() as i64 + scale as i64;
    if shift >= 0 {
        if shift > 76 {
            return Err(format!("{text} has more than {precision} digits"));
        }
        digits.extend(std::iter::repeat_n('0', shift as usize));
    } else {
        let cut = (-shift) as usize;
        let keep = digits.len().saturating_sub(cut);
        if digits[keep..].bytes().any(|b| b != b'0') {
            return Err(format!(
                "{text} has more than {scale} fraction digits (the schema's scale); it would be rounded"
            ));
        }
        digits.truncate(keep);
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > precision {
        return Err(format!(
            "{text} has more than {precision} digits at scale {scale} (the schema's precision)"
        ));
    }
    if significant.len() > 38 {
        return Err(format!("{text}: decimals over 38 digits are not supported"));
    }
    let magnitude: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| bad())?
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// The shortest big-endian two's complement bytes of `n`.
fn twos_complement(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// "YYYY-MM-DD" → days since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (
        number(parts.next()?, 4)?,
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// "HH:MM:SS[.fff…]" → units (`per_second` per second) since midnight; `None` if it would
/// need rounding.
fn parse_time(s: &str, per_second: i128) -> Option<i128> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let (h, m, sec) = (
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
    );
    if parts.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let fraction = fraction(frac, per_second)?;
    Some(i128::from(h * 3600 + m * 60 + sec) * per_second + fraction)
}

/// ".123456" digits → units of 1/`per_second`; `None` when digits would be lost.
fn fraction(digits: &str, per_second: i128) -> Option<i128> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let places = per_second.ilog10() as usize;
    let (kept, rest) = digits.split_at(digits.len().min(places));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let padded = format!("{kept:0<places$}");
    if padded.is_empty() {
        Some(0)
    } else {
        padded.parse().ok()
    }
}

/// RFC 3339 text → units since the epoch. Local timestamps take no offset (or `Z`).
fn parse_timestamp(s: &str, per_second: i128, local: bool) -> Result<i128, String> {
    let bad = || format!("\"{s}\" is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z)");
    if s.len() < 19 {
        return Err(bad());
    }
    let (date, rest) = s.split_at(10);
    let days = parse_date(date).ok_or_else(bad)?;
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    let (time, offset_seconds) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|i| *i >= 8) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let (h, m) = (number(h, 2).ok_or_else(bad)?, number(m, 2).ok_or_else(bad)?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        (t, sign * (h * 3600 + m * 60))
    } else if local {
        (rest, 0)
    } else {
        return Err(format!("\"{s}\" has no time zone offset (add Z or +hh:mm)"));
    };
    if local && offset_seconds != 0 {
        return Err(format!(
            "\"{s}\": a local timestamp has no time zone offset"
        ));
    }
    let of_day = parse_time(time, per_second).ok_or_else(|| {
        format!("\"{s}\": the time is not HH:MM:SS or has more fraction digits than the type keeps")
    })?;
    Ok((i128::from(days) * 86_400 - i128::from(offset_seconds)) * per_second + of_day)
}

#[cfg(test)]
mod tests;
