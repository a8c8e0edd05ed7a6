//! `switchyard lineage --format openlineage`: the routes as OpenLineage static lineage, one
//! `JobEvent` per route (spec 2-0-2): the job `{namespace: "switchyard", name: <route>}`, its
//! input datasets (CDC tables in `postgres://host:port/db`, webhook event types in
//! `webhook://<source>`) and output datasets (topics in `kafka://<first bootstrap server>`).
//!
//! Names follow what the configuration (or `--live`, the database) knows: a table glob stays
//! `public.*` and a topic template keeps `{event_type}` until run time.

use std::time::SystemTime;

use serde_json::{Value as Json, json};

use crate::catalog::{LiveTables, entries};
use crate::config::{Config, SourceKind};

/// Schema URL of the events printed.
pub(super) const JOB_EVENT_SCHEMA_URL: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent";

/// Schema URL of the job type facet.
const JOB_TYPE_SCHEMA_URL: &str =
    "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";

/// The `producer` of the events: this build of switchyard.
pub(super) fn producer() -> String {
    format!("urn:switchyard:{}", env!("CARGO_PKG_VERSION"))
}

/// `postgres://host:port/db` of a source URL, without user or password.
pub(super) fn postgres_namespace(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(cfg) => {
            let host = match cfg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => "localhost".into(),
            };
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            let db = cfg
                .get_dbname()
                .or(cfg.get_user())
                .unwrap_or("postgres")
                .to_string();
            format!("postgres://{host}:{port}/{db}")
        }
        Err(_) => "postgres://unknown".into(),
    }
}

/// `kafka://<first bootstrap server>`.
pub(super) fn kafka_namespace(bootstrap: &str) -> String {
    let first = bootstrap.split(',').next().unwrap_or("").trim();
    format!("kafka://{first}")
}

fn push_unique(list: &mut Vec<Json>, dataset: Json) {
    if !list.contains(&dataset) {
        list.push(dataset);
    }
}

/// One JobEvent per route, in configuration order.
pub(super) fn job_events(config: &Config, live: Option<&LiveTables>, now: SystemTime) -> Vec<Json> {
    let event_time = humantime::format_rfc3339_millis(now).to_string();
    let kafka = kafka_namespace(&config.kafka.bootstrap_servers);
    let all = entries(config, live);
    let mut events = Vec::new();
    for route in &config.routes {
        let Some(source) = config.sources.get(&route.source) else {
            continue;
        };
        let input_namespace = match &source.kind {
            SourceKind::Postgres(pg) => postgres_namespace(&pg.url),
            SourceKind::Webhook(_) => format!("webhook://{}", route.source),
        };
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for e in all.iter().filter(|e| e.route.name == route.name) {
            for input in &e.inputs {
                push_unique(
                    &mut inputs,
                    json!({"namespace": input_namespace, "name": input}),
                );
            }
            push_unique(&mut outputs, json!({"namespace": kafka, "name": e.topic}));
        }
        events.push(json!({
            "eventTime": event_time,
            "producer": producer(),
            "schemaURL": JOB_EVENT_SCHEMA_URL,
            "job": {
                "namespace": "switchyard",
                "name": route.name,
                "facets": {
                    "jobType": {
                        "_producer": producer(),
                        "_schemaURL": JOB_TYPE_SCHEMA_URL,
                        "processingType": "STREAMING",
                        "integration": "SWITCHYARD",
                        "jobType": "ROUTE",
                    }
                }
            },
            "inputs": inputs,
            "outputs": outputs,
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const CONFIG: &str = r#"
[kafka]
bootstrap_servers = "broker-1:9092,broker-2:9092"
[schema_registry]
url = "http://registry:8081"
[sources.appdb]
type = "postgres"
url = "postgres://switchyard:secret@db.internal:5433/shop"
tables = ["public.*", "billing.invoices"]
[sources.stripe]
type = "webhook"
provider = "none"
allow_unauthenticated = true
[[routes]]
name = "orders"
source = "appdb"
tables = ["public.orders", "billing.invoices"]
[[routes]]
name = "payments"
source = "stripe"
topic = "stripe.{event_type}"
event_types = ["payment_intent.*", "charge.refunded"]
"#;

    #[test]
    fn every_route_is_one_job_event_with_its_datasets() {
        let cfg = Config::from_str_with_env(Path::new("r.toml"), CONFIG, |_| None).expect("valid");
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let events = job_events(&cfg, None, now);
        assert_eq!(events.len(), 2);
        let orders = &events[0];
        assert_eq!(orders["eventTime"], "2023-11-14T22:13:20.123Z");
        assert_eq!(orders["schemaURL"], JOB_EVENT_SCHEMA_URL);
        assert_eq!(orders["producer"], producer());
        assert!(orders.get("eventType").is_none() && orders.get("run").is_none());
        assert_eq!(orders["job"]["namespace"], "switchyard", "{orders:#}");
        assert_eq!(orders["job"]["name"], "orders");
        assert_eq!(
            orders["job"]["facets"]["jobType"]["processingType"],
            "STREAMING"
        );
        assert_eq!(
            orders["inputs"],
            json!([
                {"namespace": "postgres://db.internal:5433/shop", "name": "public.orders"},
                {"namespace": "postgres://db.internal:5433/shop", "name": "billing.invoices"},
            ])
        );
        assert_eq!(
            orders["outputs"],
            json!([
                {"namespace": "kafka://broker-1:9092", "name": "appdb.public.orders"},
                {"namespace": "kafka://broker-1:9092", "name": "appdb.billing.invoices"},
            ])
        );
        assert!(
            !orders.to_string().contains("secret"),
            "no password in the output"
        );
        let payments = &events[1];
        assert_eq!(
            payments["inputs"],
            json!([
                {"namespace": "webhook://stripe", "name": "payment_intent.*"},
                {"namespace": "webhook://stripe", "name": "charge.refunded"},
            ])
        );
        assert_eq!(
            payments["outputs"],
            json!([{"namespace": "kafka://broker-1:9092", "name": "stripe.{event_type}"}])
        );

        // With the live table list a glob becomes the real tables.
        let cfg = Config::from_str_with_env(
            Path::new("r.toml"),
            &CONFIG.replace("tables = [\"public.orders\", \"billing.invoices\"]\n", ""),
            |_| None,
        )
        .expect("valid");
        let live: LiveTables = [(
            "appdb".to_string(),
            vec![
                ("public".to_string(), "customers".to_string()),
                ("public".to_string(), "orders".to_string()),
            ],
        )]
        .into_iter()
        .collect();
        let events = job_events(&cfg, Some(&live), now);
        let names: Vec<&str> = events[0]["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        assert_eq!(names, ["public.customers", "public.orders"]);
    }
}
