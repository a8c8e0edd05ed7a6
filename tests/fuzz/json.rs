//! The webhook body's JSON: the one-pass scan (`json::scan`) and the JSON Pointer
//! reads over it (`json::pointer`), against serde_json as the reference: never take
//! a body serde_json refuses, never refuse one it parses, read the same value at every pointer.
//! Inputs: generated JSON with escapes, surrogates, huge and long numbers, deep nesting; the
//! same with edits (invalid UTF-8, control characters, stray brackets); arbitrary bytes.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use switchyard::json::pointer::{Fields, JsonDoc, read};
use switchyard::json::scan::{MAX_DEPTH, scan};

use crate::{cases, within_heap};

/// Keys a provider's pointer might name, spelled plainly or with escapes serde_json reads.
const KEYS: &[&str] = &[
    "id",
    "type",
    "data",
    "object",
    "a/b",
    "m~n",
    "é",
    "0",
    "1",
    "x",
    "",
    "\\u0069d",
    "a\\/b",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\n",
];

/// Pointers into the documents the generator makes (and some that are not pointers).
const POINTERS: &[&str] = &[
    "",
    "/id",
    "/type",
    "/data/object/id",
    "/data/0",
    "/0",
    "/1/0",
    "/0/0/0/0",
    "/a~1b",
    "/m~0n",
    "/é",
    "/",
    "/x/1/id",
    "/01",
    "/-",
    "/data/object/0/x",
    "no-slash",
];

fn string_literal() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z0-9 ]{0,6}",
        "\\PC{0,3}",
        proptest::sample::select(vec![
            "\\\"",
            "\\\\",
            "\\/",
            "\\b",
            "\\f",
            "\\n",
            "\\r",
            "\\t",
            "\\u00e9",
            "\\u0000",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\udc00x",
            "\\uDBFF\\uDFFF",
        ])
        .prop_map(str::to_string),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        // Longer than any integer type, exponents past f64's range, negative zero.
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?",
        Just("-0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => string_literal(),
        3 => number(),
        1 => proptest::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
    ]
}

fn space() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["", "", "", " ", "\n  ", "\t", "\r\n"])
}

/// A JSON text: objects and arrays of scalars, keys from [`KEYS`] (duplicates included).
pub fn json_text() -> impl Strategy<Value = String> {
    scalar().prop_recursive(6, 48, 5, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(|k| format!("\"{k}\"")),
            1 => string_literal(),
        ];
        prop_oneof![
            proptest::collection::vec((inner.clone(), space()), 0..5).prop_map(|items| {
                let body: Vec<String> = items
                    .into_iter()
                    .map(|(v, s)| format!("{s}{v}{s}"))
                    .collect();
                format!("[{}]", body.join(","))
            }),
            proptest::collection::vec((key, inner, space()), 0..5).prop_map(|members| {
                let body: Vec<String> = members
                    .into_iter()
                    .map(|(k, v, s)| format!("{s}{k}{s}:{s}{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

/// Bytes JSON cares about, and some it refuses.
const PIECES: &[&[u8]] = &[
    b"\"",
    b"\\",
    b",",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"0",
    b"-",
    b"e",
    b".",
    b" ",
    b"\x01",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\\u12",
    b"\\ud800",
    b"1e400",
    b"tru",
    b"nul",
    b"01",
    b"+1",
    b"\x00",
    b"/*",
    b"NaN",
];

/// `text` with a few edits: bytes removed, replaced, inserted.
fn edited(text: String) -> impl Strategy<Value = Vec<u8>> {
    let len = text.len();
    let edit = (0..=len, 0u8..3, proptest::sample::select(PIECES));
    proptest::collection::vec(edit, 1..4).prop_map(move |edits| {
        let mut b = text.clone().into_bytes();
        for (at, kind, piece) in edits {
            let at = at.min(b.len());
            match kind {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => b[at] = piece[0],
                _ => {
                    b.splice(at..at, piece.iter().copied());
                }
            }
        }
        b
    })
}

/// Nested `depth` deep along the path `/a/a/…` or `/0/0/…`, with a value at the bottom.
fn deep() -> impl Strategy<Value = (String, usize)> {
    (MAX_DEPTH - 8..MAX_DEPTH + 200, any::<bool>(), scalar()).prop_map(|(depth, arrays, leaf)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        (
            format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth)),
            depth,
        )
    })
}

/// Heap a body's check may hold: its text, and the values read. A pointer to an object builds
/// serde_json's tree of it, a B-tree node (about 1 KiB) per object: about 200 times the 6
/// bytes of `{"a":}` (linear in the body, which the source bounds; nothing a length field or
/// a nesting can multiply).
fn heap_limit(len: usize) -> u64 {
    256 * len as u64 + (64 << 10)
}

/// Checks `JsonDoc` against serde_json on `bytes` at `pointers`.
fn agrees_with_serde_json(bytes: &[u8], pointers: &[&str]) -> Result<(), TestCaseError> {
    let shown = || format!("{:?} at {pointers:?}", String::from_utf8_lossy(bytes));
    let tree = serde_json::from_slice::<Value>(bytes);
    let skipped = serde_json::from_slice::<serde::de::IgnoredAny>(bytes);
    let fields = Arc::new(Fields::new(
        pointers.iter().map(|p| p.to_string()).collect(),
    ));
    let (doc, read_while_checked) = within_heap(heap_limit(bytes.len()), &shown, || {
        (
            JsonDoc::parse(bytes),
            JsonDoc::parse_reading(bytes, &fields),
        )
    });
    // Reading fields can only refuse more: a number out of f64's range or a lone surrogate is
    // refused where a pointer reads it (as serde_json does), skipped elsewhere.
    if read_while_checked.is_ok() {
        prop_assert!(
            doc.is_ok(),
            "parse_reading took what parse refuses: {}",
            shown()
        );
    }
    if let Err(e) = &read_while_checked {
        prop_assert!(
            tree.is_err(),
            "refused {} that serde_json parses: {}",
            shown(),
            e
        );
    }
    match &doc {
        Ok(doc) => {
            // Never takes a body serde_json refuses even when it skips everything.
            prop_assert!(skipped.is_ok(), "took {} that serde_json refuses", shown());
            if let Ok(text) = std::str::from_utf8(bytes) {
                prop_assert_eq!(doc.text(), Some(text));
            } else {
                prop_assert_eq!(
                    doc.text(),
                    None,
                    "a body that is not UTF-8 must be refused later"
                );
            }
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            // Never refuses a body serde_json parses.
            prop_assert!(
                tree.is_err(),
                "refused {} that serde_json parses: {}",
                shown(),
                e
            );
        }
    }
    if let (Ok(tree), Ok(doc), Ok(checked)) = (&tree, &doc, &read_while_checked) {
        let together = doc.pointers(pointers);
        let read_at_check = checked.read_for(pointers).map(<[_]>::to_vec);
        prop_assert_eq!(read_at_check.as_ref(), Some(&together));
        for (p, got) in pointers.iter().zip(&together) {
            let want = tree.pointer(p);
            prop_assert_eq!(got.as_ref(), want, "{} at {:?}", shown(), p);
            let alone = doc.pointer(p);
            prop_assert_eq!(alone.as_ref(), want, "{} at {:?}, alone", shown(), p);
            let one = read(bytes, p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                one.as_ref(),
                want,
                "{} at {:?}, by pointer::read",
                shown(),
                p
            );
        }
    }
    Ok(())
}

fn pointers() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(proptest::sample::select(POINTERS), 0..5)
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn well_formed_json_reads_as_serde_json_reads_it(text in json_text(), ps in pointers()) {
        agrees_with_serde_json(text.as_bytes(), &ps)?;
    }

    #[test]
    fn edited_json_is_refused_or_read_as_serde_json_reads_it(
        bytes in json_text().prop_flat_map(edited),
        ps in pointers(),
    ) {
        agrees_with_serde_json(&bytes, &ps)?;
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_read_as_serde_json_reads_them(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ps in pointers(),
    ) {
        agrees_with_serde_json(&bytes, &ps)?;
    }

    /// Nesting past the scan's depth and serde_json's recursion limit: an answer, no overflow
    /// of the stack, whether a pointer goes down the nest or not.
    #[test]
    fn deep_nesting_is_answered_without_overflowing_the_stack(
        (text, depth) in deep(),
        down in 0usize..400,
    ) {
        let path_a = "/a".repeat(down.min(depth));
        let path_0 = "/0".repeat(down.min(depth));
        agrees_with_serde_json(text.as_bytes(), &[&path_a, &path_0, "/id", ""])?;
    }

    /// The scan itself on any text and any pointer tokens: an answer, and ranges that lie on
    /// character boundaries of the text when it takes it.
    #[test]
    fn the_scan_answers_any_text(
        text in prop_oneof![json_text(), "\\PC{0,64}", ".{0,64}"],
        wants in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec("[a-z0-9é/~]{0,3}", 0..4)),
            0..70,
        ),
    ) {
        if let Ok(found) = scan(&text, &wants) {
            prop_assert!(wants.len() <= 64);
            prop_assert_eq!(found.len(), wants.len());
            prop_assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
                "the scan took {:?}", text
            );
            for range in found.into_iter().flatten() {
                prop_assert!(text.get(range.clone()).is_some(), "{:?} in {:?}", range, text);
            }
        }
    }
}

/// Regressions: the extremes, once each.
#[test]
fn a_megabyte_of_open_brackets_is_an_error_not_a_stack_overflow() {
    let fields = Arc::new(Fields::new(vec!["/id".into(), "/0/0/0".into(), "".into()]));
    for open in ["[", "{\"a\":", "[{\"id\":"] {
        let text = open.repeat((1 << 20) / open.len());
        let err = JsonDoc::parse(text.as_bytes()).expect_err("unbalanced");
        assert!(!err.to_string().is_empty());
        assert!(JsonDoc::parse_reading(text.as_bytes(), &fields).is_err());
    }
    // Balanced, a million deep: serde_json skips it (iteratively) where no pointer goes, and
    // reads nothing deeper than its recursion limit where one does.
    let deep = format!("{}1{}", "[".repeat(1 << 20), "]".repeat(1 << 20));
    let doc = JsonDoc::parse(deep.as_bytes()).expect("serde_json skips it");
    assert_eq!(doc.pointer("/0/0/0"), None);
    assert_eq!(doc.pointer(""), None);
    assert!(JsonDoc::parse_reading(deep.as_bytes(), &fields).is_err());
}
