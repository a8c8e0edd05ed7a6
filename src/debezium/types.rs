//! PostgreSQL column types → Avro, as Debezium maps them, and pgoutput text values → Avro
//! values. The mapping (README, "Type mapping"): int2/int4 → int, int8 → long, float4/8 →
//! float/double, bool → boolean, text/varchar/char/name → string, numeric(p,s) → decimal bytes
//! (unconstrained numeric → string), date → date, time → time-micros, timestamp →
//! timestamp-micros, timestamptz → ISO-8601 string, uuid → string, json/jsonb → string, bytea →
//! bytes, one-dimensional arrays → array, enums and everything else → string.
//!
//! Text values assume the replication session runs with `TimeZone=UTC` and `DateStyle=ISO`,
//! which the source pins at connect time.

use apache_avro::types::Value;
use serde_json::{Value as Json, json};

/// The Avro shape of a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// int2, int4
    Int,
    /// int8
    Long,
    /// float4
    Float,
    /// float8
    Double,
    /// bool
    Boolean,
    /// text-like, enums and unknown types; `connect_name` marks a semantic type.
    String {
        /// Kafka Connect semantic name, e.g. `io.debezium.data.Json`.
        connect_name: Option<&'static str>,
    },
    /// numeric(p, s)
    Decimal {
        /// Precision.
        precision: u32,
        /// Scale.
        scale: u32,
    },
    /// date: days since the epoch.
    Date,
    /// time: microseconds since midnight.
    TimeMicros,
    /// timestamp: microseconds since the epoch, no time zone.
    TimestampMicros,
    /// timestamptz: ISO-8601 string in UTC.
    ZonedTimestamp,
    /// bytea
    Bytes,
    /// A one-dimensional array of the element type.
    Array(Box<ColumnType>),
}

/// A text value that does not parse as its column type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value {value:?} is not a valid {expected}")]
pub struct TypeError {
    /// The text received (cut to 80 characters).
    pub value: String,
    /// What it should have been.
    pub expected: &'static str,
}

fn bad(text: &str, expected: &'static str) -> TypeError {
    TypeError {
        value: text.chars().take(80).collect(),
        expected,
    }
}

/// The Avro type of a column of type `oid` with modifier `typmod`.
pub fn column_type(oid: u32, typmod: i32) -> ColumnType {
    match oid {
        21 | 23 => ColumnType::Int,
        20 => ColumnType::Long,
        700 => ColumnType::Float,
        701 => ColumnType::Double,
        16 => ColumnType::Boolean,
        1700 if typmod >= 4 => {
            let t = (typmod - 4) as u32;
            ColumnType::Decimal {
                precision: (t >> 16) & 0xFFFF,
                scale: t & 0xFFFF,
            }
        }
        1082 => ColumnType::Date,
        1083 => ColumnType::TimeMicros,
        1114 => ColumnType::TimestampMicros,
        1184 => ColumnType::ZonedTimestamp,
        2950 => ColumnType::String {
            connect_name: Some("io.debezium.data.Uuid"),
        },
        114 | 3802 => ColumnType::String {
            connect_name: Some("io.debezium.data.Json"),
        },
        17 => ColumnType::Bytes,
        // Arrays of the types above.
        1005 | 1007 => ColumnType::Array(Box::new(ColumnType::Int)),
        1016 => ColumnType::Array(Box::new(ColumnType::Long)),
        1021 => ColumnType::Array(Box::new(ColumnType::Float)),
        1022 => ColumnType::Array(Box::new(ColumnType::Double)),
        1000 => ColumnType::Array(Box::new(ColumnType::Boolean)),
        1009 | 1015 | 1014 => {
            ColumnType::Array(Box::new(ColumnType::String { connect_name: None }))
        }
        2951 => ColumnType::Array(Box::new(ColumnType::String {
            connect_name: Some("io.debezium.data.Uuid"),
        })),
        _ => ColumnType::String { connect_name: None },
    }
}

impl ColumnType {
    /// The Avro schema of a non-null value of this type.
    pub(crate) fn avro_schema(&self) -> Json {
        match self {
            ColumnType::Int => json!("int"),
            ColumnType::Long => json!("long"),
            ColumnType::Float => json!("float"),
            ColumnType::Double => json!("double"),
            ColumnType::Boolean => json!("boolean"),
            ColumnType::String { connect_name: None } => json!("string"),
            ColumnType::String {
                connect_name: Some(n),
            } => json!({"type": "string", "connect.name": n}),
            ColumnType::Decimal { precision, scale } => json!({
                "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale,
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "connect.parameters": {"scale": scale.to_string(), "connect.decimal.precision": precision.to_string()}
            }),
            ColumnType::Date => {
                json!({"type": "int", "logicalType": "date", "connect.name": "io.debezium.time.Date"})
            }
            ColumnType::TimeMicros => {
                json!({"type": "long", "logicalType": "time-micros", "connect.name": "io.debezium.time.MicroTime"})
            }
            ColumnType::TimestampMicros => {
                json!({"type": "long", "logicalType": "timestamp-micros", "connect.name": "io.debezium.time.MicroTimestamp"})
            }
            ColumnType::ZonedTimestamp => {
                json!({"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"})
            }
            ColumnType::Bytes => json!("bytes"),
            ColumnType::Array(elem) => {
                json!({"type": "array", "items": ["null", elem.avro_schema()]})
            }
        }
    }

    /// The value Debezium puts in a NOT NULL column whose value is not known (a key-only old
    /// row): zero, empty, or the epoch.
    pub fn zero(&self) -> Value {
        match self {
            ColumnType::Int => Value::Int(0),
            ColumnType::Long => Value::Long(0),
            ColumnType::Float => Value::Float(0.0),
            ColumnType::Double => Value::Double(0.0),
            ColumnType::Boolean => Value::Boolean(false),
            ColumnType::String { .. } => Value::String(String::new()),
            ColumnType::Decimal { .. } => Value::Decimal(vec![0u8].into()),
            ColumnType::Date => Value::Date(0),
            ColumnType::TimeMicros => Value::TimeMicros(0),
            ColumnType::TimestampMicros => Value::TimestampMicros(0),
            ColumnType::ZonedTimestamp => Value::String("1970-01-01T00:00:00.000000Z".into()),
            ColumnType::Bytes => Value::Bytes(Vec::new()),
            ColumnType::Array(_) => Value::Array(Vec::new()),
        }
    }

    /// Parses a pgoutput text value.
    pub fn parse(&self, text: &str) -> Result<Value, TypeError> {
        Ok(match self {
            ColumnType::Int => Value::Int(text.parse().map_err(|_| bad(text, "int"))?),
            ColumnType::Long => Value::Long(text.parse().map_err(|_| bad(text, "bigint"))?),
            ColumnType::Float => {
                Value::Float(parse_float(text).ok_or_else(|| bad(text, "real"))? as f32)
            }
            ColumnType::Double => {
                Value::Double(parse_float(text).ok_or_else(|| bad(text, "double precision"))?)
            }
            ColumnType::Boolean => match text {
                "t" => Value::Boolean(true),
                "f" => Value::Boolean(false),
                _ => return Err(bad(text, "boolean")),
            },
            ColumnType::String { .. } => Value::String(text.to_string()),
            ColumnType::Decimal { scale, .. } => Value::Decimal(
                decimal_bytes(text, *scale)
                    .ok_or_else(|| bad(text, "numeric"))?
                    .into(),
            ),
            ColumnType::Date => Value::Date(parse_date(text).ok_or_else(|| bad(text, "date"))?),
            ColumnType::TimeMicros => {
                Value::TimeMicros(parse_time(text).ok_or_else(|| bad(text, "time"))?)
            }
            ColumnType::TimestampMicros => Value::TimestampMicros(
                parse_timestamp(text)
                    .ok_or_else(|| bad(text, "timestamp"))?
                    .0,
            ),
            ColumnType::ZonedTimestamp => {
                Value::String(zoned_iso(text).ok_or_else(|| bad(text, "timestamptz"))?)
            }
            ColumnType::Bytes => Value::Bytes(parse_bytea(text).ok_or_else(|| bad(text, "bytea"))?),
            ColumnType::Array(elem) => {
                let items = parse_array(text).ok_or_else(|| bad(text, "one-dimensional array"))?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(match item {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(s) => Value::Union(1, Box::new(elem.parse(&s)?)),
                    });
                }
                Value::Array(out)
            }
        })
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Two's-complement big-endian unscaled value of a decimal text at `scale`.
pub fn decimal_bytes(text: &str, scale: u32) -> Option<Vec<u8>> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || frac.len() > scale as usize {
        return None;
    }
    // Unscaled magnitude as little-endian base-256 digits.
    let mut mag: Vec<u8> = vec![0];
    let pad = scale as usize - frac.len();
    for d in int
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', pad))
    {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xFF) as u8);
            carry >>= 8;
        }
    }
    if neg {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        if mag.last().is_some_and(|b| b & 0x80 == 0) {
            mag.push(0xFF);
        }
    } else if mag.last().is_some_and(|b| b & 0x80 != 0) {
        mag.push(0);
    }
    // Minimal length, big-endian.
    while mag.len() > 1 {
        let top = mag[mag.len() - 1];
        let next = mag[mag.len() - 2];
        if (top == 0 && next & 0x80 == 0) || (top == 0xFF && next & 0x80 != 0) {
            mag.pop();
        } else {
            break;
        }
    }
    mag.reverse();
    Some(mag)
}

/// The last year of PostgreSQL's `date` (5874897 AD): larger years are not dates it writes.
const MAX_YEAR: i64 = 5_874_897;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_date_parts(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let mut parts = body.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    // Years past the last date PostgreSQL has (5874897 AD) would overflow the day count.
    if !(0..=MAX_YEAR).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if bc { 1 - y } else { y };
    Some(days_from_civil(y, m, d))
}

fn parse_date(text: &str) -> Option<i32> {
    i32::try_from(parse_date_parts(text)?).ok()
}

fn parse_time(text: &str) -> Option<i64> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut p = hms.splitn(3, ':');
    let h: i64 = p.next()?.parse().ok()?;
    let m: i64 = p.next()?.parse().ok()?;
    let s: i64 = p.next()?.parse().ok()?;
    if frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || !(0..=24).contains(&h)
        || !(0..=59).contains(&m)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    // `.5` is 500000 µs: the digits scaled to six places (checked above: at most six digits).
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32)
    };
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Microseconds since the epoch and the offset in seconds, of `YYYY-MM-DD HH:MM:SS[.f][±HH[:MM]]`.
fn parse_timestamp(text: &str) -> Option<(i64, i64)> {
    let (date, rest) = text.split_once(' ')?;
    let bc = rest.ends_with(" BC");
    let rest = rest.trim_end_matches(" BC");
    let (time, offset) = match rest.rfind(['+', '-']) {
        Some(i) if i >= 8 => (&rest[..i], Some(&rest[i..])),
        _ => (rest, None),
    };
    let days = if bc {
        parse_date_parts(&format!("{date} BC"))?
    } else {
        parse_date_parts(date)?
    };
    let micros = days
        .checked_mul(86_400_000_000)?
        .checked_add(parse_time(time)?)?;
    let offset_secs = match offset {
        None => 0,
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let mut p = o[1..].split(':');
            let h: i64 = p.next()?.parse().ok()?;
            let m: i64 = p.next().map_or(Some(0), |m| m.parse().ok())?;
            // PostgreSQL's offsets are within ±15:59; anything past a day is not an offset.
            if !(0..=24).contains(&h) || !(0..=59).contains(&m) {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    Some((micros, offset_secs))
}

/// A timestamptz text as ISO-8601 in UTC with microseconds, e.g. `2024-11-05T08:49:37.123456Z`.
fn zoned_iso(text: &str) -> Option<String> {
    let (local, offset) = parse_timestamp(text)?;
    let utc = local.checked_sub(offset * 1_000_000)?;
    let days = utc.div_euclid(86_400_000_000);
    let in_day = utc.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1_000_000;
    if !(0..=9999).contains(&y) {
        return Some(format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            in_day % 1_000_000
        ));
    }
    // The common case written digit by digit: this runs for every timestamptz cell.
    let mut out = String::with_capacity(27);
    for (n, width, after) in [
        (y, 4, '-'),
        (i64::from(m), 2, '-'),
        (i64::from(d), 2, 'T'),
        (secs / 3600, 2, ':'),
        ((secs / 60) % 60, 2, ':'),
        (secs % 60, 2, '.'),
        (in_day % 1_000_000, 6, 'Z'),
    ] {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + ((n / 10_i64.pow(i)) % 10) as u8));
        }
        out.push(after);
    }
    Some(out)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    let hex_digits = text.strip_prefix("\\x")?;
    hex::decode(hex_digits).ok()
}

/// Elements of a one-dimensional array literal (`{1,NULL,"a b"}`); `None` for NULL elements.
fn parse_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            out.push(Some(item));
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return None; // nested (multi-dimensional) or malformed
                }
                item.push(c);
                chars.next();
            }
            out.push(if item == "NULL" { None } else { Some(item) });
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
