//! JSON Pointer (RFC 6901) reads over a JSON text checked to be well-formed: the few values a
//! webhook provider names (id, type, subject) are read in one pass over the text, skipping
//! everything off their paths, without building a tree of the whole document.

use std::sync::Arc;

use serde_json::Value;

use super::scan::{index, scan};

/// Fields read from a JSON body, by pointer: a webhook source's identity fields (its
/// provider's, then its `id_pointer` and `type_pointer`), split into tokens once, when the
/// source is built.
#[derive(Debug, PartialEq)]
pub struct Fields {
    pointers: Vec<String>,
    tokens: Vec<Option<Vec<String>>>,
}

impl Fields {
    /// The fields at `pointers`, each split into reference tokens once.
    pub fn new(pointers: Vec<String>) -> Fields {
        let tokens = pointers.iter().map(|p| tokens(p)).collect();
        Fields { pointers, tokens }
    }

    /// True when these are the fields at `ps`, in that order.
    pub fn is(&self, ps: &[&str]) -> bool {
        self.pointers
            .iter()
            .map(String::as_str)
            .eq(ps.iter().copied())
    }
}

/// The wants of `tokens` (pointers that are not pointers want nothing).
fn wants(tokens: &[Option<Vec<String>>]) -> Vec<Want<'_>> {
    tokens
        .iter()
        .enumerate()
        .filter_map(|(slot, t)| t.as_deref().map(|tokens| Want { tokens, slot }))
        .collect()
}

/// A JSON body checked to be well-formed, kept as text: the few fields a provider names are
/// read from it by pointer, without building a tree of the whole document (which cost more
/// than the signature check and the Avro encoding together on 1 KiB bodies).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDoc {
    text: Text,
    /// The source's identity fields, read while the text was checked.
    read: Option<(Arc<Fields>, Values)>,
}

/// Values read at a [`Fields`]' pointers, in order (`None`: no value there).
type Values = Box<[Option<Value>]>;

/// A document's text: UTF-8 (checked once, by the parse), or not (serde_json skips invalid
/// UTF-8 inside strings no pointer reads, and such a body is refused later as not UTF-8).
#[derive(Debug, Clone, PartialEq)]
enum Text {
    Utf8(Box<str>),
    Bytes(Box<[u8]>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Utf8(s) => s.as_bytes(),
            Text::Bytes(b) => b,
        }
    }
}

impl JsonDoc {
    /// Checks `body` is one JSON value (trailing whitespace only) and keeps it.
    pub fn parse(body: &[u8]) -> Result<JsonDoc, serde_json::Error> {
        JsonDoc::parse_reading(body, &Arc::new(Fields::new(Vec::new())))
    }

    /// [`JsonDoc::parse`], reading the values at `fields` in the same pass: a source's body is
    /// checked and its identity read in one scan of the text.
    pub fn parse_reading(body: &[u8], fields: &Arc<Fields>) -> Result<JsonDoc, serde_json::Error> {
        let (text, out) = match std::str::from_utf8(body) {
            Ok(text) => {
                let out = match fast_str(text, &fields.tokens) {
                    Some(values) => values,
                    None => slow(body, &fields.tokens)?,
                };
                (Text::Utf8(text.into()), out)
            }
            Err(_) => (Text::Bytes(body.into()), slow(body, &fields.tokens)?),
        };
        Ok(JsonDoc {
            text,
            read: Some((Arc::clone(fields), out.into())),
        })
    }

    /// The JSON text, if it is UTF-8 (checked once, when it was parsed).
    pub fn text(&self) -> Option<&str> {
        match &self.text {
            Text::Utf8(s) => Some(s),
            Text::Bytes(_) => None,
        }
    }

    /// The values at `ps` if they were read while the text was checked.
    pub fn read_for(&self, ps: &[&str]) -> Option<&[Option<Value>]> {
        match &self.read {
            Some((fields, values)) if fields.is(ps) => Some(values),
            _ => None,
        }
    }

    /// A document from a value (tests, dry runs).
    pub(crate) fn from_value(v: &Value) -> JsonDoc {
        JsonDoc {
            text: Text::Utf8(v.to_string().into()),
            read: None,
        }
    }

    /// The value at JSON Pointer `p` (RFC 6901, as `serde_json::Value::pointer`), read in one
    /// pass that skips everything off the path.
    pub fn pointer(&self, p: &str) -> Option<Value> {
        self.pointers(&[p]).pop().flatten()
    }

    /// The values at several JSON Pointers, read together in one pass over the text: the
    /// provider's id, type and subject cost one scan of the body, not one each.
    pub fn pointers(&self, ps: &[&str]) -> Vec<Option<Value>> {
        if ps.len() > 64 {
            // A pass follows at most 64 pointers (a bit each).
            return ps.chunks(64).flat_map(|c| self.pointers(c)).collect();
        }
        let tokens: Vec<Option<Vec<String>>> = ps.iter().map(|p| tokens(p)).collect();
        match &self.text {
            Text::Utf8(s) => fast_str(s, &tokens),
            Text::Bytes(_) => None,
        }
        .or_else(|| slow(self.text.bytes(), &tokens).ok())
        .unwrap_or_else(|| vec![None; ps.len()])
    }
}

/// A JSON Pointer's reference tokens, unescaped; `None` when it is not a pointer.
fn tokens(p: &str) -> Option<Vec<String>> {
    if p.is_empty() {
        return Some(Vec::new());
    }
    Some(
        p.strip_prefix('/')?
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The value at JSON Pointer `p` in the JSON text `text` (`Ok(None)`: nothing there), read
/// in one pass without building the document; an error when `text` is not JSON.
pub fn read(text: &[u8], p: &str) -> Result<Option<Value>, serde_json::Error> {
    let tokens = [tokens(p)];
    let mut values = match fast(text, &tokens) {
        Some(v) => v,
        None => slow(text, &tokens)?,
    };
    Ok(values.pop().flatten())
}

/// The values at `tokens` (a pointer's each) in `text`, which must be one JSON value, read by
/// serde_json: the authority on what is JSON, and the error message when it is not.
fn slow(
    text: &[u8],
    tokens: &[Option<Vec<String>>],
) -> Result<Vec<Option<Value>>, serde_json::Error> {
    let mut out = vec![None; tokens.len()];
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::de::DeserializeSeed::deserialize(
        At {
            wants: wants(tokens),
            out: &mut out,
        },
        &mut de,
    )?;
    de.end()?;
    Ok(out)
}

/// The values at `tokens` (a pointer's each) in `text`, read by [`scan`]: `None` when the
/// scan refused the text or a value, and serde_json must give the answer.
fn fast(text: &[u8], tokens: &[Option<Vec<String>>]) -> Option<Vec<Option<Value>>> {
    fast_str(std::str::from_utf8(text).ok()?, tokens)
}

/// [`fast`] of a text already known to be UTF-8.
fn fast_str(text: &str, tokens: &[Option<Vec<String>>]) -> Option<Vec<Option<Value>>> {
    let found = scan(text, tokens).ok()?;
    let text = text.as_bytes();
    found
        .into_iter()
        .map(|at| match at {
            Some(r) => {
                let t = text.get(r)?;
                // A string without escapes (most ids and types) is its text; anything else is
                // read by serde_json.
                match t {
                    [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
                        let s = std::str::from_utf8(inner).ok()?;
                        Some(Some(Value::String(s.to_string())))
                    }
                    _ => serde_json::from_slice(t).ok().map(Some),
                }
            }
            None => Some(None),
        })
        .collect()
}

/// The value at `tokens` below `v` (a tree already built for a shorter pointer).
fn value_at<'v>(v: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens.iter().try_fold(v, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => a.get(index(t)?),
        _ => None,
    })
}

/// Reads an object key and answers which of the wants (a bit each, in order; the first 64)
/// go on through it.
struct Key<'a, 'p>(&'a [Want<'p>]);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_, '_> {
    type Value = u64;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<u64, E> {
        Ok(self
            .0
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, w)| w.tokens.first().is_some_and(|t| t == key))
            .fold(0, |m, (i, _)| m | 1 << i))
    }
}

/// One pointer still looked for: its remaining tokens, and where its value goes.
#[derive(Clone, Copy)]
struct Want<'p> {
    tokens: &'p [String],
    slot: usize,
}

/// Reads the values at several pointers' remaining tokens, skipping everything else.
struct At<'p, 'o> {
    wants: Vec<Want<'p>>,
    out: &'o mut [Option<Value>],
}

impl<'p> At<'p, '_> {
    /// The wants going on through `key`, with that token taken off; their earlier values are
    /// forgotten (the last of duplicate keys wins, as in a parsed tree).
    fn through(&mut self, matches: impl Fn(usize, &str) -> bool) -> Vec<Want<'p>> {
        let mut next = Vec::new();
        for (i, w) in self.wants.iter().enumerate() {
            if let Some((first, rest)) = w.tokens.split_first()
                && matches(i, first)
            {
                self.out[w.slot] = None;
                next.push(Want {
                    tokens: rest,
                    slot: w.slot,
                });
            }
        }
        next
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.wants.iter().any(|w| w.tokens.is_empty()) {
            // A pointer ends here: build this value once, and read longer pointers from it.
            let v: Value = serde::Deserialize::deserialize(d)?;
            for w in &self.wants {
                self.out[w.slot] = value_at(&v, w.tokens).cloned();
            }
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for At<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Keys are compared where they lie (no String per key); a bit per want that matches.
        while let Some(matched) = map.next_key_seed(Key(&self.wants))? {
            let wants = self.through(|i, _| i < 64 && matched & (1 << i) != 0);
            if wants.is_empty() {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                map.next_value_seed(At {
                    wants,
                    out: &mut *self.out,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let wants = self.through(|_, t| index(t) == Some(i));
            let more = if wants.is_empty() {
                seq.next_element::<serde::de::IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(At {
                    wants,
                    out: &mut *self.out,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_read_from_the_text_agree_with_a_parsed_tree() {
        let docs = [
            r#"{"id":"evt_1","type":"a.b","data":{"object":{"id":"ch_9","n":[1,{"x":"y"}]}}}"#,
            r#"{"a/b":{"m~n":1},"é":"accent","\u00e9x":2,"k":null,"t":true,"f":-1.5e3}"#,
            r#"[0,[1,2,[3]],{"0":"zero"}]"#,
            r#"{"dup":1,"dup":{"v":2}}"#,
            r#""just a string""#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"s":"\"quoted\" \n"}"#,
        ];
        let pointers = [
            "",
            "/id",
            "/type",
            "/data/object/id",
            "/data/object/n/1/x",
            "/data/object/n/2",
            "/a~1b/m~0n",
            "/é",
            "/éx",
            "/k",
            "/t",
            "/f",
            "/0",
            "/1/2/0",
            "/2/0",
            "/01",
            "/-",
            "/dup/v",
            "/dup",
            "/big",
            "/neg",
            "/s",
            "/missing",
            "/id/x",
            "no-slash",
        ];
        for d in docs {
            let tree: Value = serde_json::from_str(d).expect("test document");
            let doc = JsonDoc::parse(d.as_bytes()).expect("valid");
            for p in pointers {
                assert_eq!(doc.pointer(p), tree.pointer(p).cloned(), "{d} at {p:?}");
            }
            // All at once (shared prefixes, a pointer inside another's value, repeats).
            let together = doc.pointers(&pointers);
            for (p, v) in pointers.iter().zip(&together) {
                assert_eq!(v.as_ref(), tree.pointer(p), "{d} at {p:?}, read together");
            }
            let reversed: Vec<&str> = pointers.iter().rev().copied().collect();
            let back = doc.pointers(&reversed);
            for (p, v) in reversed.iter().zip(&back) {
                assert_eq!(
                    v.as_ref(),
                    tree.pointer(p),
                    "{d} at {p:?}, read in reverse order"
                );
            }
        }
        let fields = Arc::new(Fields::new(
            pointers.iter().map(|p| p.to_string()).collect(),
        ));
        for d in docs {
            // Checked and read in one pass: the same values.
            let tree: Value = serde_json::from_str(d).expect("test document");
            let doc = JsonDoc::parse_reading(d.as_bytes(), &fields).expect("valid");
            for (p, v) in pointers.iter().zip(doc.pointers(&pointers)) {
                assert_eq!(
                    v.as_ref(),
                    tree.pointer(p),
                    "{d} at {p:?}, read while checked"
                );
            }
        }
        for bad in [
            "{",
            "{}x",
            "[1,]",
            "",
            "{\"a\":1,}",
            "{\"id\":\"x\",}",
            "{\"data\":{\"object\":{\"id\":1 2}}}",
            "{\"id\":\"\\q\"}",
            "[0,[1,2,[3]]] 4",
        ] {
            assert!(JsonDoc::parse(bad.as_bytes()).is_err(), "{bad}");
            assert!(
                JsonDoc::parse_reading(bad.as_bytes(), &fields).is_err(),
                "{bad}, read while checked"
            );
        }
    }

    /// xorshift64*: reproducible random texts.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    const KEYS: &[&str] = &[
        "id", "type", "data", "object", "a/b", "m~n", "é", "0", "1", "x",
    ];

    /// A random value, `depth` levels at most.
    fn value(rng: &mut Rng, depth: usize) -> Value {
        let scalars = [
            r#""evt_1""#,
            r#""a \"quoted\" \\ / \n é \u00e9 \ud83d\ude00""#,
            "0",
            "-12",
            "3.25e-4",
            "18446744073709551615",
            "-9223372036854775808",
            "1e300",
            "true",
            "false",
            "null",
            r#""""#,
        ];
        match rng.below(if depth == 0 { 1 } else { 4 }) {
            0 => serde_json::from_str(scalars[rng.below(scalars.len())]).expect("scalar"),
            1 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
            _ => Value::Object(
                (0..rng.below(5))
                    .map(|_| (rng.pick(KEYS).to_string(), value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    /// The text of `v`, spelled as a provider might: compact or spaced, keys sometimes escaped.
    fn spell(rng: &mut Rng, v: &Value) -> String {
        let text = if rng.below(2) == 0 {
            serde_json::to_string(v)
        } else {
            serde_json::to_string_pretty(v)
        };
        let text = text.expect("serialisable");
        if rng.below(4) == 0 {
            // Escaped spellings of the same keys.
            text.replace("\"id\"", "\"\\u0069d\"")
                .replace("\"a/b\"", "\"a\\/b\"")
        } else {
            text
        }
    }

    /// `text` with a few random edits (bytes JSON cares about, and some it refuses).
    fn mutate(rng: &mut Rng, text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        let pieces: &[&[u8]] = &[
            b"\"", b"\\", b",", b":", b"{", b"}", b"[", b"]", b"0", b"-", b"e", b".", b" ",
            b"\x01", b"\xff", b"u", b"\\u12", b"\\ud800", b"1e400", b"tru", b"nul", b"01", b"+1",
        ];
        for _ in 0..=rng.below(3) {
            let at = rng.below(b.len() + 1);
            match rng.below(3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => {
                    b[at] = pieces[rng.below(pieces.len())][0];
                }
                _ => {
                    let piece = pieces[rng.below(pieces.len())];
                    b.splice(at..at, piece.iter().copied());
                }
            }
        }
        b
    }

    #[test]
    fn the_fast_scan_agrees_with_serde_json_on_random_texts() {
        let pointers = [
            "",
            "/id",
            "/type",
            "/data",
            "/data/object",
            "/data/object/id",
            "/0",
            "/1/0",
            "/x/1",
            "/a~1b",
            "/m~0n",
            "/é",
            "/id/x",
            "/01",
            "/-",
            "/0/id",
            "/data/0/é",
            "no-slash",
        ];
        let mut rng = Rng(0x05ca_1ab1_e0dd_ba11);
        let (mut fast_taken, mut valid) = (0, 0);
        for round in 0..20_000 {
            let depth = 1 + rng.below(5);
            let v = value(&mut rng, depth);
            let text = spell(&mut rng, &v);
            let mutated = rng.below(2) == 0;
            let bytes = if mutated {
                mutate(&mut rng, &text)
            } else {
                text.clone().into_bytes()
            };
            let ps: Vec<&str> = (0..1 + rng.below(4))
                .map(|_| pointers[rng.below(pointers.len())])
                .collect();
            let tokens: Vec<Option<Vec<String>>> = ps.iter().map(|p| tokens(p)).collect();
            let quick = fast(&bytes, &tokens);
            let sure = slow(&bytes, &tokens);
            let shown = String::from_utf8_lossy(&bytes);
            if let Some(values) = &quick {
                // Never takes what serde_json refuses, never reads a different value.
                match &sure {
                    Ok(s) => assert_eq!(values, s, "round {round}: {shown} at {ps:?}"),
                    Err(e) => panic!("round {round}: the scan took {shown}, serde_json: {e}"),
                }
                fast_taken += 1;
            }
            if !mutated {
                // Whatever a provider sends (well-formed, not deep) takes the fast path.
                assert!(quick.is_some(), "round {round}: refused {shown} at {ps:?}");
                let tree: Value = serde_json::from_slice(&bytes).expect("well-formed");
                for (p, got) in ps.iter().zip(quick.iter().flatten()) {
                    assert_eq!(
                        got.as_ref(),
                        tree.pointer(p),
                        "round {round}: {shown} at {p}"
                    );
                }
            }
            valid += usize::from(sure.is_ok());
        }
        // The mutations made both kinds of text, and the scan took most of the good ones.
        assert!(
            valid > 11_000 && valid < 19_000,
            "{valid} well-formed of 20000"
        );
        assert!(fast_taken > 10_000, "{fast_taken}");
    }

    #[test]
    fn what_the_scan_refuses_serde_json_still_decides() {
        let fields = Arc::new(Fields::new(vec!["/id".into()]));
        // Nested deeper than the scan follows, off the path: serde_json skips it.
        let deep = format!(r#"{{"id":"e","x":{}{}}}"#, "[".repeat(300), "]".repeat(300));
        let doc = JsonDoc::parse_reading(deep.as_bytes(), &fields).expect("well-formed");
        assert_eq!(doc.pointer("/id"), Some(Value::String("e".into())));
        // A number out of range is refused where it is read, skipped elsewhere.
        assert!(JsonDoc::parse_reading(br#"{"id":1e400}"#, &fields).is_err());
        let off = JsonDoc::parse_reading(br#"{"id":"e","n":1e400}"#, &fields).expect("skipped");
        assert_eq!(off.pointer("/id"), Some(Value::String("e".into())));
        // A lone surrogate in a key on the path is refused, with serde_json's message; skipped
        // off the path.
        let err = JsonDoc::parse_reading(br#"{"\ud800":1}"#, &fields).expect_err("lone surrogate");
        assert!(err.to_string().contains("escape"), "{err}");
        assert!(JsonDoc::parse_reading(br#"{"id":"e","n":{"\ud800":1}}"#, &fields).is_ok());
        // Invalid UTF-8 in a skipped string: serde_json skips it too (the handler then refuses
        // the body as not UTF-8).
        let not_utf8 = JsonDoc::parse_reading(b"{\"id\":\"e\",\"n\":\"\xff\"}", &fields)
            .expect("serde_json skips it");
        assert_eq!(not_utf8.text(), None, "the handler must refuse it");
        assert_eq!(not_utf8.pointer("/id"), Some(Value::String("e".into())));
        assert_eq!(off.text(), Some(r#"{"id":"e","n":1e400}"#));
    }
}
