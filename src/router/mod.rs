//! The route table: which routes take an event, and to which topic.
//!
//! [`RouteTable::route`] does no I/O and is cheap: routes are compiled once from the
//! configuration and indexed by source. The router issue adds filters, keys and transforms.
//! Its one piece of state: a route with `{event_type}` in its topic and `max_topics` remembers
//! the topics it has named (at most `max_topics`); an event whose topic would be one more is a
//! [`RouteError`] (the pipeline dead-letters it as `unroutable`). Test:
//! `tests::a_route_names_at_most_max_topics_topics_and_keeps_them`, and
//! `tests/it/dynamic_topics.rs`.

pub(crate) mod fast;
pub mod filter;
pub mod transform;

use std::sync::Arc;

use crate::config::{Config, TopicTemplate, is_legal_topic};
use crate::event::{Event, Payload};

/// A compiled route.
#[derive(Debug, Clone)]
struct CompiledRoute {
    name: Arc<str>,
    topic: TopicTemplate,
    /// The topic when the template has no placeholders, and whether it is a legal name
    /// (checked once here, not per event).
    literal_topic: Option<(String, bool)>,
    tables: Vec<String>,
    /// `tables` split once: (schema, table); no schema matches any schema.
    table_names: Vec<(Option<String>, String)>,
    ops: Vec<String>,
    key: Arc<[String]>,
    key_pointer: Option<Arc<str>>,
    event_types: Vec<String>,
    filter: Filter,
    filter_text: Option<Arc<str>>,
    /// The filter in the subset [`fast`] evaluates directly, when it is in it.
    fast: Option<Arc<fast::Fast>>,
    transform: Option<Arc<crate::config::Transform>>,
    /// The transform's column lists, made once per table shape (this route's own).
    columns: Arc<transform::ColumnsCache>,
    /// The schemas of the change shapes this route encoded (its own; a reload hands them to the
    /// route of the same name: [`RouteTable::recompile`]).
    shapes: Arc<crate::debezium::shapes::ShapeCache>,
    on_error: crate::config::OnError,
    value_schema: Option<Arc<crate::avro::typed::ValueSchema>>,
    /// `max_topics`: the topics this route has named so far (shared by its copies).
    topics: Option<Arc<TopicBound>>,
}

/// The distinct topics a route with `{event_type}` and `max_topics` may name. The first
/// `max` topics it renders are its topics for the life of the process (a reload keeps them:
/// [`RouteTable::recompile`]); an event whose topic would be one more is unroutable (to the
/// DLQ).
#[derive(Debug)]
struct TopicBound {
    max: usize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl TopicBound {
    /// True when `topic` is, or may become, one of the route's topics.
    fn admits(&self, topic: &str) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(topic) {
            return true;
        }
        if seen.len() >= self.max {
            return false;
        }
        seen.insert(topic.to_string());
        true
    }
}

/// A route's compiled CEL filter.
#[derive(Debug, Clone)]
enum Filter {
    /// No filter: every event the other conditions let through.
    None,
    /// Compiled once.
    Cel(Arc<cel::Program>),
    /// Did not compile (cannot happen after validation): takes nothing.
    Broken,
}

impl CompiledRoute {
    /// Why the route's table/operation/type conditions do not take `event` (for dry runs;
    /// [`CompiledRoute::takes`] is the allocation-free twin).
    fn why_not(&self, event: &Event) -> Option<String> {
        if self.takes(event) {
            return None;
        }
        Some(match &event.payload {
            Payload::Message(_) => {
                "logical decoding messages go to routes with ops = [\"message\"]".into()
            }
            Payload::Webhook(_) => format!(
                "type `{}` matches none of event_types {:?}",
                event.event_type, self.event_types
            ),
            Payload::Change(c) => {
                let table_ok = self.tables.is_empty()
                    || self.tables.iter().any(|t| match t.split_once('.') {
                        Some((schema, table)) => schema == c.schema && table == c.table,
                        None => *t == c.table,
                    });
                if table_ok {
                    format!("operation `{}` is not in ops {:?}", c.op, self.ops)
                } else {
                    format!(
                        "table `{}.{}` is not in tables {:?}",
                        c.schema, c.table, self.tables
                    )
                }
            }
        })
    }

    /// The topic and key of an event this route takes.
    fn render(&self, event: &Event) -> Result<RouteMatch, RouteError> {
        let (topic, legal) = match &self.literal_topic {
            Some((topic, legal)) => (topic.clone(), *legal),
            None => {
                let topic = render_topic(&self.topic, event).ok_or_else(|| RouteError {
                    route: self.name.clone(),
                    message: "the topic names a field this event does not have".into(),
                })?;
                let legal = is_legal_topic(&topic);
                if legal
                    && let Some(bound) = &self.topics
                    && !bound.admits(&topic)
                {
                    return Err(RouteError {
                        route: self.name.clone(),
                        message: format!(
                            "event type `{}` would make topic `{topic}`, one more than the {} topics this route may create (max_topics); list the types it takes in event_types, or raise max_topics",
                            event.event_type, bound.max
                        ),
                    });
                }
                (topic, legal)
            }
        };
        if !legal {
            return Err(RouteError {
                route: self.name.clone(),
                message: format!("`{topic}` is not a legal Kafka topic name"),
            });
        }
        Ok(RouteMatch {
            route: self.name.clone(),
            topic,
            key: Arc::clone(&self.key),
            key_pointer: self.key_pointer.clone(),
            transform: self.transform.clone(),
            columns: Arc::clone(&self.columns),
            shapes: Arc::clone(&self.shapes),
            on_error: self.on_error,
            value_schema: self.value_schema.clone(),
        })
    }

    /// True when the route's filters take the event.
    fn takes(&self, event: &Event) -> bool {
        let c = match &event.payload {
            Payload::Change(c) => c,
            // Messages are not rows: only routes that ask for them take them.
            Payload::Message(_) => return self.ops.iter().any(|o| o == "m"),
            Payload::Webhook(_) => {
                return self.event_types.is_empty()
                    || self.event_types.iter().any(|g| glob(g, &event.event_type));
            }
        };
        let table_ok = self.table_names.is_empty()
            || self.table_names.iter().any(|(schema, table)| {
                *table == c.table && schema.as_ref().is_none_or(|s| *s == c.schema)
            });
        let op_ok = self.ops.is_empty() || self.ops.iter().any(|o| o == c.op.code());
        table_ok && op_ok
    }
}

/// Fills the placeholders of `topic` from `event`, copying each field once; `None` when the
/// event lacks a field the template names.
fn render_topic(topic: &TopicTemplate, event: &Event) -> Option<String> {
    use crate::config::TopicField;
    topic.render(|f: TopicField| -> Option<&str> {
        match (f, &event.payload) {
            (TopicField::Source, _) => Some(&event.source),
            (TopicField::EventType, _) => Some(&event.event_type),
            (TopicField::Schema, Payload::Change(c)) => Some(&c.schema),
            (TopicField::Table, Payload::Change(c)) => Some(&c.table),
            (TopicField::Schema | TopicField::Table, _) => None,
        }
    })
}

/// True when `text` matches `pattern`, where `*` stands for any run of characters
/// (`payment_intent.*`, `*.created`, `*`).
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Where one route sends an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The route's name.
    pub route: Arc<str>,
    /// The rendered topic.
    pub topic: String,
    /// Key columns instead of the primary key (change events); empty: the primary key.
    pub key: Arc<[String]>,
    /// A JSON Pointer to the key in a webhook body; none: the event id.
    pub key_pointer: Option<Arc<str>>,
    /// Field transforms of this route.
    pub transform: Option<Arc<crate::config::Transform>>,
    /// The route's transformed column lists (see [`transform::ColumnsCache`]).
    pub columns: Arc<transform::ColumnsCache>,
    /// The route's change shapes (see [`crate::debezium::shapes::ShapeCache`]).
    pub shapes: Arc<crate::debezium::shapes::ShapeCache>,
    /// What a definite failure on this route does.
    pub on_error: crate::config::OnError,
    /// Webhooks: the typed record of `data` (`value_schema`).
    pub value_schema: Option<Arc<crate::avro::typed::ValueSchema>>,
}

/// A route matched but could not name a topic for this event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route `{route}`: {message}")]
pub struct RouteError {
    /// The route's name.
    pub route: Arc<str>,
    /// What went wrong.
    pub message: String,
}

/// All routes, indexed by source.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_source: crate::FastMap<String, Vec<CompiledRoute>>,
    /// What the filters of each source read (built per event, once).
    needs: crate::FastMap<String, filter::Needs>,
}

impl RouteTable {
    /// Compiles the routes of a validated configuration.
    pub fn compile(config: &Config) -> RouteTable {
        let mut needs: crate::FastMap<String, filter::Needs> = crate::FastMap::default();
        let mut by_source: crate::FastMap<String, Vec<CompiledRoute>> = crate::FastMap::default();
        for r in &config.routes {
            by_source
                .entry(r.source.clone())
                .or_default()
                .push(CompiledRoute {
                    name: Arc::from(r.name.as_str()),
                    topic: r.topic.clone(),
                    literal_topic: r
                        .topic
                        .as_literal()
                        .map(|t| (t.to_string(), is_legal_topic(t))),
                    tables: r.tables.clone(),
                    table_names: r
                        .tables
                        .iter()
                        .map(|t| match t.split_once('.') {
                            Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
                            None => (None, t.clone()),
                        })
                        .collect(),
                    ops: r.ops.clone(),
                    key: Arc::from(r.key.clone()),
                    key_pointer: r.key_pointer.as_deref().map(Arc::from),
                    event_types: r.event_types.clone(),
                    filter: match &r.filter {
                        None => Filter::None,
                        Some(expr) => {
                            let change = matches!(
                                config.sources.get(&r.source).map(|s| &s.kind),
                                Some(crate::config::SourceKind::Postgres(_))
                            );
                            match filter::compile(expr, change) {
                                Ok(p) => {
                                    needs
                                        .entry(r.source.clone())
                                        .or_default()
                                        .merge(&filter::Needs::of(expr, &p, change));
                                    Filter::Cel(Arc::new(p))
                                }
                                Err(_) => Filter::Broken,
                            }
                        }
                    },
                    filter_text: r.filter.as_deref().map(Arc::from),
                    fast: None,
                    transform: r.transform.clone(),
                    columns: Arc::default(),
                    shapes: Arc::default(),
                    on_error: r.on_error,
                    value_schema: r.value_schema.clone(),
                    topics: r.max_topics.map(|max| {
                        Arc::new(TopicBound {
                            max,
                            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
                        })
                    }),
                });
        }
        for route in by_source.values_mut().flatten() {
            if let Filter::Cel(p) = &route.filter {
                route.fast = fast::compile(p.expression()).map(Arc::new);
            }
        }
        RouteTable { by_source, needs }
    }

    /// Compiles `config`'s routes for a reload of `old`: a route with the same name and topic
    /// keeps the topics it has named, so a reload does not reset its `max_topics` bound; a
    /// route with the same name and source keeps the change shapes it encoded (a
    /// [`crate::debezium::shapes::ShapeCache`] entry is a function of the change's shape and
    /// key columns alone, so it cannot go stale, and the same schema objects keep matching the
    /// encoder's registered ids by address). A route that is gone takes its caches with it.
    pub(crate) fn recompile(config: &Config, old: &RouteTable) -> RouteTable {
        let mut new = RouteTable::compile(config);
        for (source, routes) in new.by_source.iter_mut() {
            let Some(before) = old.by_source.get(source) else {
                continue;
            };
            for r in routes.iter_mut() {
                if let Some(p) = before.iter().find(|p| p.name == r.name) {
                    r.shapes = Arc::clone(&p.shapes);
                }
                let Some(bound) = &r.topics else {
                    continue;
                };
                let prev = before
                    .iter()
                    .find(|p| p.name == r.name && p.topic == r.topic)
                    .and_then(|p| p.topics.as_ref());
                if let Some(prev) = prev {
                    let seen = prev
                        .seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    r.topics = Some(Arc::new(TopicBound {
                        max: bound.max,
                        seen: std::sync::Mutex::new(seen),
                    }));
                }
            }
        }
        new
    }

    /// The routes that take `event`, in configuration order.
    pub fn route(&self, event: &Event) -> Vec<Result<RouteMatch, RouteError>> {
        let Some(routes) = self.by_source.get(&event.source) else {
            return Vec::new();
        };
        let takes = |r: &&CompiledRoute| r.takes(event) && !matches!(r.filter, Filter::Broken);
        if !routes
            .iter()
            .filter(takes)
            .any(|r| matches!(r.filter, Filter::Cel(_)))
        {
            return routes
                .iter()
                .filter(takes)
                .map(|r| r.render(event))
                .collect();
        }
        // One scope for the event, shared by its source's filters.
        let none = filter::Needs::default();
        let needs = self.needs.get(&event.source).unwrap_or(&none);
        let vars = filter::vars(event, needs);
        filter::with_scope(&vars, |holds| {
            routes
                .iter()
                .filter(takes)
                .filter(|r| match &r.filter {
                    Filter::Cel(p) => match &r.fast {
                        Some(f) => f.holds(&vars),
                        None => holds(p),
                    },
                    _ => true,
                })
                .map(|r| r.render(event))
                .collect()
        })
    }

    /// Every route of `event`'s source, in configuration order, with where it would send the
    /// event or why it does not take it (for `switchyard route`).
    pub(crate) fn explain(&self, event: &Event) -> Vec<(Arc<str>, Result<RouteMatch, String>)> {
        let Some(routes) = self.by_source.get(&event.source) else {
            return Vec::new();
        };
        let vars = filter::vars(event, &filter::Needs::all());
        routes
            .iter()
            .map(|r| {
                let outcome = if let Some(why) = r.why_not(event) {
                    Err(why)
                } else {
                    match &r.filter {
                        Filter::Cel(p) if !filter::holds(p, &vars) => Err(format!(
                            "filter `{}` does not hold",
                            r.filter_text.as_deref().unwrap_or("")
                        )),
                        Filter::Broken => Err("the filter does not compile".into()),
                        _ => r.render(event).map_err(|e| e.message),
                    }
                };
                (r.name.clone(), outcome)
            })
            .collect()
    }

    /// The transforms with masks of `source`'s routes (only route `route`, if given): what
    /// an entry of that source is masked with at rest and for viewers.
    pub fn masks(&self, source: &str, route: Option<&str>) -> Vec<Arc<crate::config::Transform>> {
        self.by_source
            .get(source)
            .into_iter()
            .flatten()
            .filter(|r| route.is_none_or(|name| &*r.name == name))
            .filter_map(|r| r.transform.clone())
            .filter(|t| !t.mask.is_empty())
            .collect()
    }

    /// Topics known without seeing an event (templates without placeholders).
    pub(crate) fn static_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .by_source
            .values()
            .flatten()
            .filter_map(|r| r.topic.as_literal().map(str::to_string))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn event_type_globs() {
        assert!(glob("payment_intent.*", "payment_intent.succeeded"));
        assert!(!glob("payment_intent.*", "charge.refunded"));
        assert!(glob("charge.refunded", "charge.refunded"));
        assert!(!glob("charge.refunded", "charge.refunded.x"));
        assert!(glob("*", "anything"));
        assert!(glob("*.created", "customer.created"));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-c-b"));
        assert!(!glob("ab*ba", "aba"));
    }
    use crate::event::{Payload, WebhookPayload};

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
             [sources.shop]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n[sources.other]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n{routes}"
        );
        let cfg = Config::from_str_with_env(Path::new("t.toml"), &text, |_| None).expect("valid");
        RouteTable::compile(&cfg)
    }

    fn event(source: &str, event_type: &str) -> Event {
        Event {
            id: crate::event::EventId::from_provider("1"),
            source: source.into(),
            event_type: event_type.into(),
            received_at_micros: 0,
            payload: Payload::Webhook(WebhookPayload {
                path: "/".into(),
                content_type: None,
                headers: Default::default(),
                body: "{}".into(),
                subject: None,
                selected_headers: Vec::new(),
            }),
        }
    }

    #[test]
    fn routes_by_source_and_renders_topics() {
        let t = table(
            "[[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"{source}.{event_type}\"\nmax_topics = 10\n\
             [[routes]]\nname = \"b\"\nsource = \"shop\"\ntopic = \"all\"\n",
        );
        let m = t.route(&event("shop", "order.paid"));
        let topics: Vec<String> = m.into_iter().map(|r| r.expect("routes").topic).collect();
        assert_eq!(topics, vec!["shop.order.paid", "all"]);
        assert!(t.route(&event("other", "x")).is_empty());
        assert_eq!(t.static_topics(), vec!["all".to_string()]);
    }

    fn change(table: &str, op: &str) -> Event {
        Event {
            id: crate::event::EventId::from_lsn(1, 0),
            source: "db".into(),
            event_type: op.into(),
            received_at_micros: 0,
            payload: Payload::Change(crate::event::ChangePayload {
                database: "app".into(),
                schema: "public".into(),
                table: table.into(),
                table_doc: None,
                op: crate::event::ChangeOp::from_code(op).expect("an op code"),
                columns: vec![].into(),
                before: None,
                after: None,
                commit_lsn: 1,
                tx_id: 1,
                commit_time_ms: 0,
                unchanged_toast: vec![],
                before_key_only: false,
                position: Default::default(),
            }),
        }
    }

    /// The schemas a route built for a table shape are its own, live as long as the route
    /// and no longer: a reload hands them to the route of the same name, a new route starts
    /// without any, and nothing is process-wide.
    #[test]
    fn change_shapes_are_cached_per_route_and_follow_the_route_through_a_reload() {
        let text = "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
                    [sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.*\"]\n\
                    [[routes]]\nname = \"all\"\nsource = \"db\"\n\
                    [[routes]]\nname = \"by_email\"\nsource = \"db\"\ntopic = \"by-email\"\nkey = [\"email\"]\n";
        let cfg = Config::from_str_with_env(Path::new("t.toml"), text, |_| None).expect("valid");
        let t = RouteTable::compile(&cfg);
        let mut e = change("users", "c");
        if let Payload::Change(c) = &mut e.payload {
            let col = |name: &str, oid: u32, is_key: bool| crate::event::ChangeColumn {
                name: name.into(),
                type_oid: oid,
                type_modifier: -1,
                nullable: !is_key,
                is_key,
                doc: None,
            };
            c.columns = vec![col("id", 20, true), col("email", 25, false)].into();
            c.after = Some(vec![Some("7".into()), Some("a@example.com".into())]);
        }
        let Payload::Change(c) = &e.payload else {
            unreachable!("a change")
        };
        let matches: Vec<RouteMatch> = t.route(&e).into_iter().map(|m| m.expect("ok")).collect();
        assert_eq!(matches.len(), 2);
        for m in &matches {
            crate::encode::change::parts(&e, c, &m.key, &m.shapes).expect("parts");
        }
        // Each route holds the shape it encoded, with its own key: not one shared entry.
        assert_eq!((matches[0].shapes.len(), matches[1].shapes.len()), (1, 1));
        assert!(!Arc::ptr_eq(&matches[0].shapes, &matches[1].shapes));
        // A later match of the same route shares its cache.
        let again = t
            .route(&e)
            .into_iter()
            .next()
            .expect("a match")
            .expect("ok");
        assert!(Arc::ptr_eq(&again.shapes, &matches[0].shapes));
        // A reload that keeps `all`, drops `by_email` and adds `renamed`: `all` keeps its
        // shapes (the same schema objects), the new route starts without any.
        let text = text.replace("name = \"by_email\"", "name = \"renamed\"");
        let cfg = Config::from_str_with_env(Path::new("t.toml"), &text, |_| None).expect("valid");
        let reloaded = RouteTable::recompile(&cfg, &t);
        let after: Vec<RouteMatch> = reloaded
            .route(&e)
            .into_iter()
            .map(|m| m.expect("ok"))
            .collect();
        assert_eq!(&*after[0].route, "all");
        assert!(Arc::ptr_eq(&after[0].shapes, &matches[0].shapes));
        assert_eq!(&*after[1].route, "renamed");
        assert!(after[1].shapes.is_empty());
        // A table compiled afresh (a restart) shares nothing with the running one.
        let fresh = RouteTable::compile(&cfg);
        for m in fresh.route(&e) {
            assert!(m.expect("ok").shapes.is_empty());
        }
    }

    #[test]
    fn postgres_routes_filter_by_table_and_operation() {
        let text = "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
                    [sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.*\"]\n\
                    [[routes]]\nname = \"orders\"\nsource = \"db\"\ntables = [\"public.orders\"]\n\
                    [[routes]]\nname = \"deletes\"\nsource = \"db\"\nops = [\"delete\"]\ntopic = \"deletes\"\n";
        let cfg = Config::from_str_with_env(Path::new("t.toml"), text, |_| None).expect("valid");
        let t = RouteTable::compile(&cfg);
        let names = |e: &Event| -> Vec<String> {
            t.route(e)
                .into_iter()
                .map(|m| m.expect("ok").route.to_string())
                .collect()
        };
        assert_eq!(names(&change("orders", "c")), ["orders"]);
        assert_eq!(names(&change("orders", "d")), ["orders", "deletes"]);
        assert_eq!(
            names(&change("orders", "tombstone")),
            ["orders", "deletes"],
            "a delete's tombstone follows it"
        );
        assert_eq!(names(&change("customers", "u")), Vec::<String>::new());
        assert_eq!(names(&change("customers", "d")), ["deletes"]);
        let m = t.route(&change("orders", "c"));
        assert_eq!(
            m[0].as_ref().expect("ok").topic,
            "db.public.orders",
            "the default postgres topic"
        );
    }

    #[test]
    fn an_event_type_that_makes_an_illegal_topic_is_an_error_not_a_guess() {
        let t = table(
            "[[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"{event_type}\"\nmax_topics = 10\n",
        );
        let m = t.route(&event("shop", "order/paid"));
        assert!(matches!(&m[0], Err(e) if e.message.contains("not a legal")));
    }

    #[test]
    fn a_route_names_at_most_max_topics_topics_and_keeps_them() {
        let t = table(
            "[[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"t.{event_type}\"\nmax_topics = 2\n",
        );
        let topic = |ty: &str| t.route(&event("shop", ty)).remove(0);
        assert_eq!(topic("one").expect("first").topic, "t.one");
        assert_eq!(topic("two").expect("second").topic, "t.two");
        let third = topic("three").expect_err("one more than max_topics");
        assert!(third.message.contains("max_topics"), "{}", third.message);
        // The topics it has keep taking events.
        assert_eq!(topic("one").expect("again").topic, "t.one");
        assert!(topic("four").is_err());
        // A reload keeps what the route has named: still no third topic.
        let text = "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
             [sources.shop]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n\
             [[routes]]\nname = \"a\"\nsource = \"shop\"\ntopic = \"t.{event_type}\"\nmax_topics = 2\n";
        let cfg = Config::from_str_with_env(Path::new("t.toml"), text, |_| None).expect("valid");
        let reloaded = RouteTable::recompile(&cfg, &t);
        assert!(reloaded.route(&event("shop", "five")).remove(0).is_err());
        assert!(reloaded.route(&event("shop", "two")).remove(0).is_ok());
    }

    /// Deterministic xorshift, so a failing case reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn json(&mut self, depth: u32) -> serde_json::Value {
            use serde_json::json;
            let keys = [
                "amount", "status", "data", "object", "id", "é", "", "a b", "/", "~1",
            ];
            match self.next() % if depth == 0 { 5 } else { 7 } {
                0 => json!(null),
                1 => json!(self.next().is_multiple_of(2)),
                2 => json!((self.next() as i64) >> (self.next() % 64)),
                3 => json!(f64::from_bits(self.next() >> 2)),
                4 => json!(["ü", "\u{0}", "'", "\"", "1e999"][(self.next() % 5) as usize]),
                5 => serde_json::Value::Array(
                    (0..self.next() % 4).map(|_| self.json(depth - 1)).collect(),
                ),
                _ => serde_json::Value::Object(
                    (0..self.next() % 5)
                        .map(|_| {
                            (
                                keys[(self.next() % keys.len() as u64) as usize].to_string(),
                                self.json(depth - 1),
                            )
                        })
                        .collect(),
                ),
            }
        }
    }

    #[test]
    fn the_router_never_panics_on_arbitrary_json_events() {
        let routes = table(
            "[router]\nmask_key = \"k\"\n\
             [[routes]]\nname = \"f\"\nsource = \"shop\"\ntopic = \"t.{event_type}\"\nmax_topics = 50\n\
             filter = \"data.amount > 1 || data.data.object.id == 'x' || size(headers) > 0\"\nkey = \"/data/object/id\"\n\
             [routes.transform]\nmask = { amount = \"sha256\", \"/data/object\" = \"redact\" }\ndrop = [\"status\", \"/data/id\"]\n\
             rename = { id = \"ident\" }\n\
             [[routes]]\nname = \"g\"\nsource = \"shop\"\ntopic = \"all\"\nevent_types = [\"*.created\", \"a*b*c\"]\n",
        );
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for round in 0..3000 {
            let body = rng.json(4).to_string();
            let types = ["x.created", "abc", "", "é.created", "*"];
            let mut e = event("shop", types[round % types.len()]);
            if let Payload::Webhook(w) = &mut e.payload {
                w.body = if round % 7 == 0 {
                    format!("{body}garbage")
                } else {
                    body
                };
            }
            for m in routes.route(&e).into_iter().flatten() {
                let _ = crate::encode::record_parts(&e, &m);
            }
            let _ = routes.explain(&e);
        }
    }
}
