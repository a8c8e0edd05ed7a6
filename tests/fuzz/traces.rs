//! The W3C trace context of an incoming webhook (`telemetry::traces::extract`: `traceparent`
//! and `tracestate`, read by the OpenTelemetry SDK's propagator). Any header text is a context
//! or none, never a panic; a context taken carries the trace and parent ids sent, never the
//! invalid all-zero ones; heap stays linear in the headers.

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::trace::TraceContextExt;
use proptest::prelude::*;
use switchyard::telemetry::traces::extract;

use crate::{cases, within_heap};

/// `traceparent` values: well-formed ones with odd versions, flags and ids, then edited.
fn traceparent() -> impl Strategy<Value = String> {
    let well_formed = (
        prop_oneof!["00", "ff", "01", "[0-9a-fA-F]{2}"],
        prop_oneof!["[0-9a-f]{32}", Just("0".repeat(32)), "[0-9A-F]{32}"],
        prop_oneof!["[0-9a-f]{16}", Just("0".repeat(16))],
        prop_oneof!["00", "01", "[0-9a-f]{2}"],
        prop_oneof![Just(String::new()), "-[ -~]{0,8}"],
    )
        .prop_map(|(v, t, p, f, tail)| format!("{v}-{t}-{p}-{f}{tail}"));
    prop_oneof![
        4 => well_formed.clone(),
        2 => (well_formed, 0usize..60, "[ -~]{0,3}").prop_map(|(s, at, piece)| {
            let at = at.min(s.len());
            format!("{}{piece}{}", &s[..at], &s[at..])
        }),
        1 => "[ -~]{0,80}",
    ]
}

/// `tracestate` values: lists of `key=value` members, long, many, odd.
fn tracestate() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        "[a-z][a-z0-9_*/-]{0,8}(@[a-z]{1,4})?=[!-+--<>-~]{0,12}",
        "[ -~]{0,10}"
    ];
    prop_oneof![
        proptest::collection::vec(member, 0..40).prop_map(|m| m.join(",")),
        Just(format!("{}k=v", "a=b,".repeat(5000))),
    ]
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn any_trace_context_is_taken_or_left_never_a_panic(
        parent in traceparent(),
        state in proptest::option::of(tracestate()),
    ) {
        let mut headers = HeaderMap::new();
        let Ok(p) = HeaderValue::from_str(&parent) else { return Ok(()) };
        headers.insert("traceparent", p);
        if let Some(s) = state.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert("tracestate", s);
        }
        let size = parent.len() + state.as_ref().map_or(0, String::len);
        let shown = || format!("traceparent {parent:?}");
        let cx = within_heap(64 * size as u64 + (64 << 10), &shown, || extract(&headers));
        if let Some(cx) = cx {
            let span = cx.span();
            let sc = span.span_context();
            let ids: Vec<&str> = parent.split('-').collect();
            prop_assert!(ids.len() >= 4, "{}", shown());
            // The SDK reads the ids as hex numbers (it takes a leading zero too many, or upper
            // case, for versions other than 00): the numbers sent, and never zero.
            let trace = u128::from_str_radix(ids[1], 16).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let span_id = u64::from_str_radix(ids[2], 16).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sc.trace_id().to_string(), format!("{trace:032x}"));
            prop_assert_eq!(sc.span_id().to_string(), format!("{span_id:016x}"));
            prop_assert!(trace != 0 && span_id != 0, "{}", shown());
        }
    }
}
