//! JSON Pointer (RFC 6901) reads over a JSON text checked to be well-formed: the few values a
//! webhook provider names (id, type, subject) are read in one pass over the text, skipping
//! everything off their paths, without building a tree of the whole document.

use std::sync::Arc;

use serde_json::Value;

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
    text: Box<[u8]>,
    /// The source's identity fields, read while the text was checked.
    read: Option<(Arc<Fields>, Values)>,
}

/// Values read at a [`Fields`]' pointers, in order (`None`: no value there).
type Values = Box<[Option<Value>]>;

impl JsonDoc {
    /// Checks `body` is one JSON value (trailing whitespace only) and keeps it.
    pub fn parse(body: &[u8]) -> Result<JsonDoc, serde_json::Error> {
        JsonDoc::parse_reading(body, &Arc::new(Fields::new(Vec::new())))
    }

    /// [`JsonDoc::parse`], reading the values at `fields` in the same pass: a source's body is
    /// checked and its identity read in one scan of the text.
    pub fn parse_reading(body: &[u8], fields: &Arc<Fields>) -> Result<JsonDoc, serde_json::Error> {
        let mut out = vec![None; fields.pointers.len()];
        let mut de = serde_json::Deserializer::from_slice(body);
        serde::de::DeserializeSeed::deserialize(
            At {
                wants: wants(&fields.tokens),
                out: &mut out,
            },
            &mut de,
        )?;
        de.end()?;
        Ok(JsonDoc {
            text: body.into(),
            read: Some((Arc::clone(fields), out.into())),
        })
    }

    /// The values at `ps` if they were read while the text was checked.
    pub fn read_for(&self, ps: &[&str]) -> Option<&[Option<Value>]> {
        match &self.read {
            Some((fields, values)) if fields.is(ps) => Some(values),
            _ => None,
        }
    }

    /// A document from a value (tests, dry runs).
    pub fn from_value(v: &Value) -> JsonDoc {
        JsonDoc {
            text: v.to_string().into_bytes().into(),
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
        let mut out = vec![None; ps.len()];
        let mut de = serde_json::Deserializer::from_slice(&self.text);
        let _ = serde::de::DeserializeSeed::deserialize(
            At {
                wants: wants(&tokens),
                out: &mut out,
            },
            &mut de,
        );
        out
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

/// An RFC 6901 array index: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
        return None;
    }
    token.parse().ok()
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
}
