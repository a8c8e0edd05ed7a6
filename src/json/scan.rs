//! One pass over a JSON text that checks it is a single well-formed value and notes where the
//! values at a few JSON Pointers lie, without allocating or building anything.
//!
//! This is the fast path of [`super::pointer::JsonDoc`]: serde_json's own pass (kept as the
//! fallback) spent about 22,000 instructions on a 1 KiB Stripe event, most of them in the
//! visitor machinery around each key and value; this scan spends a few thousand. It accepts a
//! subset of what serde_json accepts: RFC 8259 syntax, UTF-8 throughout, nesting at most
//! [`MAX_DEPTH`] deep, keys on a pointer's path without escapes or with escapes serde_json
//! reads. Whatever it refuses goes to serde_json, whose answer (and error message) stands, so
//! the fast path never takes a body serde_json refuses nor refuses one it takes (tested
//! against serde_json on random texts).

use std::ops::Range;

/// Deepest nesting the scan follows (serde_json's own limit for parsed values is 128).
pub const MAX_DEPTH: usize = 128;

/// Why the scan stopped: the caller asks serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

type Scanned<T> = Result<T, Refused>;

/// Checks `text` and returns, for each pointer of `wants` (its reference tokens; `None`: not a
/// pointer, never found), where its value lies in `text`. At most 64 pointers.
pub fn scan(text: &str, wants: &[Option<Vec<String>>]) -> Scanned<Vec<Option<Range<usize>>>> {
    if wants.len() > 64 {
        return Err(Refused);
    }
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
        wants,
        found: vec![None; wants.len()],
    };
    let all = wants
        .iter()
        .enumerate()
        .filter(|(_, w)| w.is_some())
        .fold(0u64, |m, (i, _)| m | 1 << i);
    s.value(all, 0)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(Refused);
    }
    Ok(s.found)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    wants: &'a [Option<Vec<String>>],
    found: Vec<Option<Range<usize>>>,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero (exact for the lowest such byte).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// The high bit of each byte of 8 string bytes that ends a plain run: `"`, `\` or a control
/// character (exact for the lowest such byte).
fn special(v: u64) -> u64 {
    zero_bytes(v ^ (ONES * u64::from(b'"')))
        | zero_bytes(v ^ (ONES * u64::from(b'\\')))
        | (v.wrapping_sub(ONES * 0x20) & !v & HIGH)
}

impl Scan<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Expects byte `c` after optional whitespace.
    fn eat(&mut self, c: u8) -> Scanned<()> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// One value; `mask`: the pointers (a bit each) whose first `depth` tokens led here.
    fn value(&mut self, mask: u64, depth: usize) -> Scanned<()> {
        if mask == 0 && depth > 0 {
            return self.skip(depth);
        }
        self.ws();
        let start = self.i;
        let mut ending = 0u64;
        let mut going = 0u64;
        for w in bits(mask) {
            match &self.wants[w] {
                Some(t) if t.len() == depth => ending |= 1 << w,
                Some(_) => going |= 1 << w,
                None => {}
            }
        }
        // serde_json reads the root and every value a pointer goes through in full (it skips
        // the rest): a number there must fit an f64, an escape there must be a whole code point.
        let strict = depth == 0 || mask != 0;
        match self.b.get(self.i).ok_or(Refused)? {
            b'{' => self.object(going, depth, strict)?,
            b'[' => self.array(going, depth)?,
            b'"' => {
                self.i += 1;
                if self.string()? && strict {
                    self.serde_reads::<String>(start..self.i)?;
                }
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => {
                self.number()?;
                if strict {
                    self.serde_reads::<serde_json::Value>(start..self.i)?;
                }
            }
            _ => return Err(Refused),
        }
        for w in bits(ending) {
            self.found[w] = Some(start..self.i);
        }
        Ok(())
    }

    /// A value no pointer goes through (most of a body): checked, nothing noted.
    fn skip(&mut self, depth: usize) -> Scanned<()> {
        self.ws();
        match self.b.get(self.i).ok_or(Refused)? {
            b'"' => {
                self.i += 1;
                self.string()?;
            }
            b'{' => self.object(0, depth, false)?,
            b'[' => self.array(0, depth)?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(Refused),
        }
        Ok(())
    }

    /// Refused unless serde_json reads the text at `r` as a `T`.
    fn serde_reads<T: serde::de::DeserializeOwned>(&self, r: Range<usize>) -> Scanned<()> {
        let text = self.b.get(r).ok_or(Refused)?;
        serde_json::from_slice::<T>(text)
            .map(|_| ())
            .map_err(|_| Refused)
    }

    /// An object; `strict`: serde_json reads its keys in full (see [`Scan::value`]).
    fn object(&mut self, mask: u64, depth: usize, strict: bool) -> Scanned<()> {
        if !self.open(depth, b'}')? {
            return Ok(());
        }
        loop {
            self.eat(b'"')?;
            let key = self.i;
            let escaped = self.string()?;
            let through = if mask == 0 && !(strict && escaped) {
                0
            } else {
                self.key_mask(mask, depth, key..self.i - 1, escaped)?
            };
            // The last of duplicate keys wins, as in a parsed tree.
            for w in bits(through) {
                self.found[w] = None;
            }
            self.eat(b':')?;
            self.value(through, depth + 1)?;
            if !self.next_item(b'}')? {
                return Ok(());
            }
        }
    }

    /// Steps into the container opening here, at `depth` (refused past [`MAX_DEPTH`]); false
    /// when it is empty (its `close` eaten too).
    fn open(&mut self, depth: usize, close: u8) -> Scanned<bool> {
        if depth + 1 >= MAX_DEPTH {
            return Err(Refused);
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an item of a container: true at a `,` (another item follows), false at its
    /// `close`, refused at anything else.
    fn next_item(&mut self, close: u8) -> Scanned<bool> {
        self.ws();
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(&c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Refused),
        }
    }

    /// The pointers of `mask` whose token at `depth` is the key at `raw` (its text, quotes off).
    fn key_mask(&self, mask: u64, depth: usize, raw: Range<usize>, escaped: bool) -> Scanned<u64> {
        let unescaped;
        let key: &[u8] = if escaped {
            let quoted = self.b.get(raw.start - 1..raw.end + 1).ok_or(Refused)?;
            unescaped = serde_json::from_slice::<String>(quoted).map_err(|_| Refused)?;
            unescaped.as_bytes()
        } else {
            &self.b[raw]
        };
        let mut through = 0;
        for w in bits(mask) {
            if let Some(Some(token)) = self.wants[w].as_ref().map(|t| t.get(depth))
                && token.len() == key.len()
                && token.as_bytes() == key
            {
                through |= 1 << w;
            }
        }
        Ok(through)
    }

    fn array(&mut self, mask: u64, depth: usize) -> Scanned<()> {
        if !self.open(depth, b']')? {
            return Ok(());
        }
        let mut n = 0usize;
        loop {
            let through = bits(mask)
                .filter(|&w| {
                    self.wants[w]
                        .as_ref()
                        .and_then(|t| t.get(depth))
                        .and_then(|t| index(t))
                        == Some(n)
                })
                .fold(0, |m, w| m | 1 << w);
            for w in bits(through) {
                self.found[w] = None;
            }
            self.value(through, depth + 1)?;
            if !self.next_item(b']')? {
                return Ok(());
            }
            n += 1;
        }
    }

    /// The rest of a string after its opening quote, up to and including the closing one;
    /// true when it holds an escape.
    fn string(&mut self) -> Scanned<bool> {
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none of them ends a plain run.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(chunk);
                let m = special(u64::from_le_bytes(eight));
                if m != 0 {
                    self.i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            match *self.b.get(self.i).ok_or(Refused)? {
                b'"' => {
                    self.i += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Refused)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Refused);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Refused),
                    }
                }
                0..=0x1f => return Err(Refused),
                _ => self.i += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scanned<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> Scanned<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Refused),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        Ok(())
    }
}

/// The set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let w = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(w)
    })
}

/// An RFC 6901 array index: digits, no leading zero.
pub fn index(token: &str) -> Option<usize> {
    if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
        return None;
    }
    token.parse().ok()
}
