//! Validation of `[[routes]]`: sources, topics, filters (CEL), keys, transforms, `on_error`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use serde_spanned::Spanned;

use super::diagnostic::Diagnostics;
use super::raw::*;
use super::validate::is_identifier;
use super::*;

/// The longest filter expression: far beyond any condition a person writes, and short enough
/// that the CEL parser's error for it can be shown (it panics formatting a caret past column
/// 65535).
const MAX_FILTER_BYTES: usize = 16 << 10;

/// The most operators, dots and brackets a filter may have. The CEL parser, its checks and its
/// evaluator recurse once per level of a chain (`a.b.c…`, `x[0][0]…`, `1 + 1 + …`); about 2,000
/// levels overflow a 2 MiB thread stack (a debug build; the daemon's threads have 2 MiB), which
/// aborts the process. Real conditions use a few dozen.
const MAX_FILTER_OPERATORS: usize = 512;

/// Why a filter is too large to compile and run safely, if it is.
fn filter_too_large(expr: &str) -> Option<String> {
    if expr.len() > MAX_FILTER_BYTES {
        return Some(format!(
            "{} bytes, more than the {MAX_FILTER_BYTES} a filter may have",
            expr.len()
        ));
    }
    let operators = expr
        .bytes()
        .filter(|b| b".[({!?-+*/%<>=&|".contains(b))
        .count();
    (operators > MAX_FILTER_OPERATORS).then(|| {
        format!(
            "{operators} operators, dots and brackets, more than the {MAX_FILTER_OPERATORS} a filter may have (deeper expressions overflow the evaluator's stack)"
        )
    })
}

fn validate_transform(
    name: &str,
    raw: &Spanned<RawTransform>,
    mask_key: Option<&Secret>,
    diag: &mut Diagnostics,
) -> Option<Transform> {
    let t = raw.get_ref();
    let mut ok = true;
    let mut mask = Vec::new();
    for (field, kind) in &t.mask {
        let k = match kind.get_ref().as_str() {
            "sha256" | "hash" => MaskKind::Sha256,
            "redact" => MaskKind::Redact,
            other => {
                diag.at(
                    kind.span(),
                    format!("route `{name}`: unknown mask \"{other}\" for `{field}`"),
                    Some("write \"sha256\" (keyed hash) or \"redact\"".into()),
                );
                ok = false;
                continue;
            }
        };
        if k == MaskKind::Sha256 && mask_key.is_none() {
            diag.at(
                kind.span(),
                format!("route `{name}` hashes `{field}`, which needs a key"),
                Some("add [router] mask_key = \"${SWITCHYARD_MASK_KEY}\" (a long random value, kept secret)".into()),
            );
            ok = false;
        }
        if t.drop.contains(field) {
            diag.at(
                kind.span(),
                format!("route `{name}` both drops and masks `{field}`"),
                Some(format!("keep `{field}` in one of `drop` and `mask`")),
            );
            ok = false;
        }
        mask.push((field.clone(), k));
    }
    let mut targets = std::collections::HashSet::new();
    for (from, to) in &t.rename {
        if to.is_empty() || !targets.insert(to.clone()) || t.drop.contains(from) {
            diag.at(
                raw.span(),
                format!("route `{name}`: cannot rename `{from}` to `{to}`"),
                Some(
                    "each field is renamed once, to a new non-empty name, and is not dropped"
                        .into(),
                ),
            );
            ok = false;
        }
    }
    ok.then(|| Transform {
        drop: t.drop.clone(),
        mask,
        rename: t
            .rename
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
        mask_key: mask_key.cloned().unwrap_or_default(),
    })
}

pub(super) fn validate_routes(
    raw: Vec<RawRoute>,
    sources: &BTreeMap<String, SourceConfig>,
    mask_key: Option<&Secret>,
    config_path: &Path,
    diag: &mut Diagnostics,
) -> Vec<RouteConfig> {
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut out = Vec::new();
    for r in raw {
        let name = r.name.get_ref().clone();
        let mut ok = check_name(&r, &name, &mut seen, diag);
        let source = r.source.get_ref();
        let source_cfg = source_of(&r, &name, sources, diag);
        ok &= source_cfg.is_some();
        let is_postgres = matches!(
            source_cfg,
            Some(SourceConfig {
                kind: SourceKind::Postgres(_),
                ..
            })
        );
        let topic_span = r.topic.as_ref().map_or(r.name.span(), |t| t.span());
        let topic = route_topic(&r, &name, source_cfg, topic_span.clone(), &mut ok, diag);
        let mut filter_ok_early = true;
        let (key, key_pointer) = route_key(&r, is_postgres, source_cfg.is_some()).unwrap_or_else(
            |(span, message, help)| {
                diag.at(span, message, Some(help));
                filter_ok_early = false;
                (Vec::new(), None)
            },
        );
        let not_webhook = !matches!(
            source_cfg,
            Some(SourceConfig {
                kind: SourceKind::Webhook(_),
                ..
            })
        );
        let max_topics = dynamic_topic_bound(
            name.as_str(),
            &r,
            topic.as_ref(),
            not_webhook,
            topic_span.clone(),
            diag,
        );
        if max_topics.is_err() {
            filter_ok_early = false;
        }
        filter_ok_early &= filters_fit_source(&r, &name, is_postgres, source_cfg.is_some(), diag);
        let filter = route_filter(&r, &name, is_postgres, diag);
        filter_ok_early &= r.filter.is_none() || filter.is_some();
        let transform = match &r.transform {
            None => None,
            Some(t) => match validate_transform(&name, t, mask_key, diag) {
                Some(t) => Some(std::sync::Arc::new(t)),
                None => {
                    filter_ok_early = false;
                    None
                }
            },
        };
        let on_error = match &r.on_error {
            None => OnError::Dlq,
            Some(o) => diag
                .keyword(
                    o,
                    "on_error",
                    &[("dlq", OnError::Dlq), ("halt", OnError::Halt)],
                    "write \"dlq\" (dead-letter and go on) or \"halt\" (stop the source at the event)",
                )
                .unwrap_or_else(|| {
                    filter_ok_early = false;
                    OnError::Dlq
                }),
        };
        let value_schema = route_value_schema(&r, &name, is_postgres, config_path, diag);
        filter_ok_early &= r.value_schema.is_none() || value_schema.is_some();
        let mut filter_ok = filter_ok_early;
        let ops = route_ops(&r, &mut filter_ok, diag);
        filter_ok &= messages_fit_topic(&r, &name, topic.as_ref(), topic_span, diag);
        let tables = r
            .tables
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default();
        if let (true, true, Some(topic)) = (ok, filter_ok, topic) {
            out.push(RouteConfig {
                name,
                source: source.clone(),
                topic,
                tables,
                ops,
                key,
                key_pointer,
                filter,
                transform,
                on_error,
                value_schema,
                event_types: r
                    .event_types
                    .as_ref()
                    .map(|e| e.get_ref().clone())
                    .unwrap_or_default(),
                max_topics: max_topics.unwrap_or_default(),
            });
        }
    }
    out
}

/// The route's name is an identifier and no earlier route's; reported if not.
fn check_name(
    r: &RawRoute,
    name: &str,
    seen: &mut HashMap<String, Range<usize>>,
    diag: &mut Diagnostics,
) -> bool {
    let mut ok = true;
    if !is_identifier(name) {
        diag.at(
            r.name.span(),
            format!("route name `{name}` is not allowed"),
            Some("use lowercase letters, digits, `_` and `-`".into()),
        );
        ok = false;
    }
    if seen.contains_key(name) {
        diag.at(
            r.name.span(),
            format!("duplicate route name `{name}`"),
            Some("route names must be unique: rename one of them".into()),
        );
        ok = false;
    } else {
        seen.insert(name.to_string(), r.name.span());
    }
    ok
}

/// The source the route names, or `None` (reported, with the sources there are).
fn source_of<'a>(
    r: &RawRoute,
    name: &str,
    sources: &'a BTreeMap<String, SourceConfig>,
    diag: &mut Diagnostics,
) -> Option<&'a SourceConfig> {
    let source = r.source.get_ref();
    let source_cfg = sources.get(source);
    if source_cfg.is_none() {
        let known: Vec<&str> = sources.keys().map(String::as_str).collect();
        diag.at(
            r.source.span(),
            format!("route `{name}` names source `{source}`, which is not defined"),
            Some(if known.is_empty() {
                "define it as a [sources.<name>] table".to_string()
            } else {
                format!("the defined sources are: {}", known.join(", "))
            }),
        );
    }
    source_cfg
}

/// The route's filters are of its source's kind: `event_types` for webhooks, `tables` and
/// `ops` for postgres; reported if not.
fn filters_fit_source(
    r: &RawRoute,
    name: &str,
    is_postgres: bool,
    source_known: bool,
    diag: &mut Diagnostics,
) -> bool {
    let source = r.source.get_ref();
    let mut ok = true;
    if let Some(v) = &r.event_types
        && is_postgres
    {
        diag.at(
            v.span(),
            format!("`event_types` filters apply to webhook sources, and `{source}` is a postgres source"),
            Some("filter changes with `tables` and `ops`".into()),
        );
        ok = false;
    }
    for (what, given) in [("tables", &r.tables), ("ops", &r.ops)] {
        if let Some(v) = given
            && !is_postgres
            && source_known
        {
            diag.at(
                v.span(),
                format!("`{what}` filters apply to postgres sources, and `{source}` is not one"),
                Some(format!("remove `{what}` from route `{name}`")),
            );
            ok = false;
        }
    }
    ok
}

/// A route that takes messages (which belong to no table) has a topic without `{schema}` or
/// `{table}`; reported if not.
fn messages_fit_topic(
    r: &RawRoute,
    name: &str,
    topic: Option<&TopicTemplate>,
    topic_span: Range<usize>,
    diag: &mut Diagnostics,
) -> bool {
    if let (Some(t), Some(v)) = (topic, &r.ops)
        && v.get_ref().iter().any(|o| o == "message")
        && t.parts()
            .iter()
            .any(|p| matches!(p, TopicPart::Field(TopicField::Schema | TopicField::Table)))
    {
        diag.at(
            topic_span,
            format!("route `{name}` takes messages, which belong to no table, but its topic names {{schema}} or {{table}}"),
            Some("send messages through their own route, e.g. ops = [\"message\"] and topic = \"{source}.message\"".into()),
        );
        return false;
    }
    true
}

/// The route's topic: as written, or the postgres default; its placeholders checked against the
/// source's kind (a problem is reported and clears `ok` or gives `None`).
fn route_topic(
    r: &RawRoute,
    name: &str,
    source_cfg: Option<&SourceConfig>,
    topic_span: Range<usize>,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Option<TopicTemplate> {
    let source = r.source.get_ref();
    let is_postgres = matches!(
        source_cfg,
        Some(SourceConfig {
            kind: SourceKind::Postgres(_),
            ..
        })
    );
    let topic_text = match (&r.topic, is_postgres) {
        (Some(t), _) => Some(t.get_ref().clone()),
        (None, true) => Some(
            if only_messages(r.ops.as_ref().map(|o| o.get_ref().as_slice())) {
                "{source}.message".to_string()
            } else {
                "{source}.{schema}.{table}".to_string()
            },
        ),
        (None, false) => {
            if source_cfg.is_some() {
                diag.at(
                    r.name.span(),
                    format!("route `{name}` has no topic"),
                    Some("add e.g. topic = \"webhooks.{source}\"".into()),
                );
            }
            None
        }
    };
    let topic = match topic_text.as_deref().map(parse_topic) {
        Some(Ok(t)) => Some(t),
        Some(Err(msg)) => {
            diag.at(
                    topic_span.clone(),
                    msg,
                    Some("topics use letters, digits, `.`, `_`, `-` and the placeholders {source} {schema} {table} {event_type}".into()),
                );
            None
        }
        None => None,
    };
    if let (
        Some(t),
        Some(SourceConfig {
            kind: SourceKind::Webhook(_),
            ..
        }),
    ) = (&topic, source_cfg)
    {
        for part in t.parts() {
            if let TopicPart::Field(f @ (TopicField::Schema | TopicField::Table)) = part {
                diag.at(
                        topic_span.clone(),
                        format!("{{{}}} is only known for postgres sources, and `{source}` is a webhook source", f.name()),
                        Some("use {source} or {event_type} for webhook routes".into()),
                    );
                *ok = false;
            }
        }
    }
    topic
}

/// The route's key: columns (postgres) or a JSON Pointer (webhooks); `Err((span, message,
/// help))` when it is the wrong kind for its source.
#[allow(clippy::type_complexity)]
fn route_key(
    r: &RawRoute,
    is_postgres: bool,
    source_known: bool,
) -> Result<(Vec<String>, Option<String>), (Range<usize>, String, String)> {
    let source = r.source.get_ref();
    let key_span = r.key.as_ref().map(Spanned::span).unwrap_or(0..0);
    match r.key.as_ref().map(|k| k.get_ref().clone()) {
        None => Ok((Vec::new(), None)),
        Some(RouteKey::Columns(c)) if is_postgres || !source_known => Ok((c, None)),
        Some(RouteKey::Pointer(p)) if !is_postgres && p.starts_with('/') => {
            Ok((Vec::new(), Some(p)))
        }
        Some(RouteKey::Columns(_)) => Err((
            key_span,
            format!("`{source}` is a webhook source: its key is a JSON Pointer into the body"),
            "write e.g. key = \"/data/object/id\"".into(),
        )),
        Some(RouteKey::Pointer(p)) => Err((
            key_span,
            if is_postgres {
                format!("`{source}` is a postgres source: its key is a list of columns")
            } else {
                format!("`{p}` is not a JSON Pointer")
            },
            if is_postgres {
                "write e.g. key = [\"email\"]".into()
            } else {
                "write e.g. key = \"/data/object/id\"".into()
            },
        )),
    }
}

/// The route's CEL filter, compiled once to check it; `None` when there is none or it was
/// refused (reported).
fn route_filter(
    r: &RawRoute,
    name: &str,
    is_postgres: bool,
    diag: &mut Diagnostics,
) -> Option<String> {
    match &r.filter {
        None => None,
        Some(f) if let Some(why) = filter_too_large(f.get_ref()) => {
            diag.at(
                    f.span(),
                    format!("route `{name}`: filter: {why}"),
                    Some(
                        "split the condition across routes, or select with event_types/tables/ops first"
                            .into(),
                    ),
                );
            None
        }
        Some(f) => match super::filter::check(f.get_ref(), is_postgres) {
            Ok(()) => Some(f.get_ref().clone()),
            Err(message) => {
                diag.at(
                        f.span(),
                        format!("route `{name}`: filter: {message}"),
                        Some(if is_postgres {
                            "change events have `op`, `before`, `after` and `source` (e.g. \"after.amount > 100 && op == 'c'\")".into()
                        } else {
                            "webhook events have `type`, `id`, `data` and `headers` (e.g. \"data.amount > 100\")".into()
                        }),
                    );
                None
            }
        },
    }
}

/// The route's `value_schema` file, loaded and checked; `None` when there is none or it was
/// refused (reported).
fn route_value_schema(
    r: &RawRoute,
    name: &str,
    is_postgres: bool,
    config_path: &Path,
    diag: &mut Diagnostics,
) -> Option<std::sync::Arc<crate::avro::typed::ValueSchema>> {
    let source = r.source.get_ref();
    match &r.value_schema {
        None => None,
        Some(v) if is_postgres => {
            diag.at(
                    v.span(),
                    format!("route `{name}`: `value_schema` applies to webhook routes, and `{source}` is a postgres source"),
                    Some("change events get their schema from the table; remove `value_schema`".into()),
                );
            None
        }
        Some(v) => {
            let file = Config::base_dir(config_path).join(v.get_ref());
            match crate::avro::typed::ValueSchema::load(&file) {
                Ok(s) => Some(std::sync::Arc::new(s)),
                Err(message) => {
                    diag.at(
                            v.span(),
                            format!("route `{name}`: value_schema: {message}"),
                            Some("give the path (relative to this file) of an Avro record schema (.avsc), e.g. value_schema = \"schemas/payment.avsc\"".into()),
                        );
                    None
                }
            }
        }
    }
}

/// The route's `ops` as change codes (`delete` also takes its tombstone); an unknown one is
/// reported and clears `ok`.
fn route_ops(r: &RawRoute, ok: &mut bool, diag: &mut Diagnostics) -> Vec<String> {
    let mut ops = Vec::new();
    if let Some(v) = &r.ops {
        for op in v.get_ref() {
            match op.as_str() {
                "insert" => ops.push("c".to_string()),
                "update" => ops.push("u".to_string()),
                "delete" => {
                    ops.push("d".to_string());
                    ops.push("tombstone".to_string());
                }
                "truncate" => ops.push("t".to_string()),
                "read" => ops.push("r".to_string()),
                "message" => ops.push("m".to_string()),
                other => {
                    diag.at(
                            v.span(),
                            format!("unknown operation \"{other}\""),
                            Some("ops are \"insert\", \"update\", \"delete\", \"truncate\", \"read\" (snapshot rows), \"message\" (logical decoding messages)".into()),
                        );
                    *ok = false;
                }
            }
        }
    }
    ops
}

/// The largest `max_topics`: each topic costs the broker partitions and the registry
/// subjects.
const MAX_TOPICS: i64 = 10_000;

/// Checks the bound of a webhook route whose topic names `{event_type}`: each new type a
/// sender makes up would be a new topic, so the route needs an `event_types` allow-list
/// (without a bare `*`) or `max_topics`. `Ok(max_topics)`, or `Err` once reported.
fn dynamic_topic_bound(
    name: &str,
    r: &super::raw::RawRoute,
    topic: Option<&TopicTemplate>,
    not_webhook: bool,
    topic_span: std::ops::Range<usize>,
    diag: &mut Diagnostics,
) -> Result<Option<usize>, ()> {
    let dynamic = topic.is_some_and(|t| {
        t.parts()
            .iter()
            .any(|p| matches!(p, TopicPart::Field(TopicField::EventType)))
    });
    let max = match &r.max_topics {
        None => None,
        Some(m) if !dynamic || not_webhook => {
            diag.at(
                m.span(),
                format!("`max_topics` bounds webhook topics with {{event_type}}, and route `{name}` has none"),
                Some("remove `max_topics`".into()),
            );
            return Err(());
        }
        Some(m) => match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=MAX_TOPICS).contains(m.get_ref()) => Some(n),
            _ => {
                diag.at(
                    m.span(),
                    format!("max_topics = {} is out of range", m.get_ref()),
                    Some(format!("write a number from 1 to {MAX_TOPICS}")),
                );
                return Err(());
            }
        },
    };
    if !dynamic || not_webhook || max.is_some() {
        return Ok(max);
    }
    let allow_list = r
        .event_types
        .as_ref()
        .is_some_and(|v| !v.get_ref().is_empty() && v.get_ref().iter().all(|g| g != "*"));
    if allow_list {
        return Ok(None);
    }
    diag.at(
        topic_span,
        format!("route `{name}` makes a topic per {{event_type}} without a bound: every new type a sender makes up would create a topic and registry subjects"),
        Some("list the types the route takes, e.g. event_types = [\"issues\", \"pull_request\"], or bound the topics with max_topics = 50 (events beyond it go to the DLQ as unroutable)".into()),
    );
    Err(())
}

/// True when a route's `ops` lists only logical decoding messages.
fn only_messages(ops: Option<&[String]>) -> bool {
    ops.is_some_and(|o| !o.is_empty() && o.iter().all(|x| x == "message"))
}

fn parse_topic(s: &str) -> Result<TopicTemplate, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let close = rest
                    .find('}')
                    .ok_or_else(|| format!("`{{` in topic `{s}` is not closed"))?;
                let field = match &rest[1..close] {
                    "source" => TopicField::Source,
                    "schema" => TopicField::Schema,
                    "table" => TopicField::Table,
                    "event_type" => TopicField::EventType,
                    other => return Err(format!("unknown placeholder {{{other}}} in topic `{s}`")),
                };
                parts.push(TopicPart::Field(field));
                rest = &rest[close + 1..];
            }
            Some(n) => {
                parts.push(TopicPart::Literal(rest[..n].to_string()));
                rest = &rest[n..];
            }
            None => {
                parts.push(TopicPart::Literal(rest.to_string()));
                rest = "";
            }
        }
    }
    for p in &parts {
        if let TopicPart::Literal(l) = p
            && !l
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "topic `{s}` has characters Kafka does not allow in topic names"
            ));
        }
    }
    let template = TopicTemplate { parts };
    if template.parts().is_empty() {
        return Err("topic is empty".into());
    }
    if let Some(lit) = template.as_literal()
        && !is_legal_topic(lit)
    {
        return Err(format!("`{lit}` is not a legal Kafka topic name"));
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
                        [sources.shop]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n\
                        [sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.*\"]\n";

    fn load(dir: &Path, routes: &str) -> Result<Config, ConfigErrors> {
        let path = dir.join("routes.toml");
        Config::from_str_with_env(&path, &format!("{HEAD}{routes}"), |_| None)
    }

    #[test]
    fn a_topic_per_event_type_needs_an_allow_list_or_max_topics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let errors = load(
            dir.path(),
            "[[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"t.{event_type}\"\n\
             [[routes]]\nname = \"b\"\nsource = \"shop\"\ntopic = \"u.{event_type}\"\nevent_types = [\"*\"]\n\
             [[routes]]\nname = \"c\"\nsource = \"shop\"\ntopic = \"v.{event_type}\"\nmax_topics = 0\n\
             [[routes]]\nname = \"d\"\nsource = \"shop\"\ntopic = \"w\"\nmax_topics = 5\n",
        )
        .expect_err("unbounded topics")
        .0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 4, "{text:#?}");
        for t in &text[..2] {
            assert!(
                t.contains("without a bound")
                    && t.contains("event_types = [")
                    && t.contains("max_topics = 50"),
                "{t}"
            );
        }
        // At the topic of route `a`, the fourth line of the routes.
        let at = format!("routes.toml:{}:9:", HEAD.lines().count() + 4);
        assert!(text[0].contains(&at), "{at}: {}", text[0]);
        assert!(
            text[2].contains("max_topics = 0 is out of range"),
            "{}",
            text[2]
        );
        assert!(text[3].contains("route `d` has none"), "{}", text[3]);
        load(
            dir.path(),
            "[[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"t.{event_type}\"\nevent_types = [\"issues\", \"pull_request.*\"]\n\
             [[routes]]\nname = \"b\"\nsource = \"shop\"\ntopic = \"u.{event_type}\"\nmax_topics = 10\n",
        )
        .expect("bounded");
    }

    #[test]
    fn value_schema_is_read_relative_to_the_file_and_checked_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("schemas")).expect("mkdir");
        std::fs::write(
            dir.path().join("schemas/payment.avsc"),
            r#"{"type": "record", "name": "Payment", "fields": [{"name": "id", "type": "string"}]}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("schemas/bad.avsc"), r#"{"type": "record"}"#)
            .expect("write");
        let ok = load(
            dir.path(),
            "[[routes]]\nname = \"p\"\nsource = \"shop\"\ntopic = \"p\"\nvalue_schema = \"schemas/payment.avsc\"\n",
        )
        .expect("valid");
        let typed = ok.routes[0].value_schema.as_ref().expect("typed");
        assert_eq!(typed.record_name, "io.switchyard.webhook.Payment");
        assert_eq!(typed.path, dir.path().join("schemas/payment.avsc"));

        let errors = load(
            dir.path(),
            "[[routes]]\nname = \"m\"\nsource = \"shop\"\ntopic = \"p\"\nvalue_schema = \"schemas/missing.avsc\"\n\
             [[routes]]\nname = \"b\"\nsource = \"shop\"\ntopic = \"p\"\nvalue_schema = \"schemas/bad.avsc\"\n\
             [[routes]]\nname = \"c\"\nsource = \"db\"\nvalue_schema = \"schemas/payment.avsc\"\n",
        )
        .expect_err("invalid")
        .0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("routes.toml:17:16: route `m`: value_schema: cannot read"),
            "{}",
            text[0]
        );
        assert!(text[0].contains("help: give the path"), "{}", text[0]);
        assert!(
            text[1].contains("routes.toml:22:16: route `b`: value_schema:")
                && text[1].contains("not a valid Avro schema"),
            "{}",
            text[1]
        );
        assert!(
            text[2]
                .contains("routes.toml:26:16: route `c`: `value_schema` applies to webhook routes"),
            "{}",
            text[2]
        );
    }
}
