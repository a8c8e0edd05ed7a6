//! A platform engineer's mistakes in routes.toml get precise, complete error messages.

use std::path::Path;

use switchyard::config::{Config, ConfigErrors};

const BASE: &str = r#"[kafka]
bootstrap_servers = "127.0.0.1:9092"

[schema_registry]
url = "http://127.0.0.1:8081"

[sources.orders]
type = "webhook"
provider = "none"
allow_unauthenticated = true
"#;

fn errors(text: &str) -> Vec<String> {
    errors_with_env(text, |_| None)
}

fn errors_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    match Config::from_str_with_env(Path::new("conf/routes.toml"), text, env) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_unknown_key_names_its_line_and_column() {
    let text = format!("{BASE}\n[[routes]]\nname = \"r\"\nsource = \"orders\"\ntopik = \"x\"\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let unknown = errs
        .iter()
        .find(|e| e.contains("topik"))
        .expect("unknown key reported");
    assert!(
        unknown.starts_with("conf/routes.toml:15:1: unknown field `topik`"),
        "{unknown}"
    );
    assert!(unknown.contains("help:"), "{unknown}");
}

#[test]
fn a_bad_type_names_the_value() {
    let text = BASE.replace("[kafka]\n", "[kafka]\npartitions = \"three\"\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:2:14: invalid type: string \"three\", expected i64"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_missing_environment_variable_points_at_the_reference() {
    let text = BASE.replace("\"127.0.0.1:9092\"", "\"${KAFKA_BROKERS}\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("conf/routes.toml:2:22: environment variable `KAFKA_BROKERS` is not set"),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("${KAFKA_BROKERS:-value}"), "{}", errs[0]);
}

#[test]
fn environment_variables_and_defaults_are_substituted() {
    let text = BASE
        .replace("\"127.0.0.1:9092\"", "\"${KAFKA_BROKERS}\"")
        .replace(
            "\"http://127.0.0.1:8081\"",
            "\"${REGISTRY:-http://registry:8081}\"",
        );
    let cfg = Config::from_str_with_env(Path::new("routes.toml"), &text, |n| {
        (n == "KAFKA_BROKERS").then(|| "kafka-1:9092,kafka-2:9092".to_string())
    })
    .expect("valid");
    assert_eq!(cfg.kafka.bootstrap_servers, "kafka-1:9092,kafka-2:9092");
    assert_eq!(cfg.schema_registry.url, "http://registry:8081");
}

#[test]
fn duplicate_route_names_are_reported_at_the_second_one() {
    let route = "[[routes]]\nname = \"orders\"\nsource = \"orders\"\ntopic = \"orders\"\n";
    let text = format!("{BASE}\n{route}\n{route}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:18:8: duplicate route name `orders`"),
        "{}",
        errs[0]
    );
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text = format!(
        "[server]\nlisten = \"nowhere\"\n{}\n[[routes]]\nname = \"a\"\nsource = \"missing\"\ntopic = \"{{table}}\"\n",
        BASE.replace("[kafka]\n", "[kafka]\ncolour = 1\n")
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains(":2:10: `nowhere` is not an IP address and port"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(":4:1: unknown field `colour`"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("names source `missing`, which is not defined"),
        "{}",
        errs[2]
    );
}

#[test]
fn relative_dlq_paths_are_relative_to_the_config_file() {
    let text = format!("{BASE}\n[dlq]\nurl = \"sqlite://dlq/switchyard.db\"\n");
    let cfg = Config::from_str_with_env(Path::new("/etc/switchyard/routes.toml"), &text, |_| None)
        .expect("valid");
    assert_eq!(
        cfg.dlq.store,
        switchyard::config::DlqStoreConfig::Sqlite("/etc/switchyard/dlq/switchyard.db".into())
    );
}

#[test]
fn a_topic_placeholder_a_webhook_cannot_fill_is_rejected() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"a\"\nsource = \"orders\"\ntopic = \"cdc.{{table}}\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("{table} is only known for postgres sources"),
        "{}",
        errs[0]
    );
}

#[test]
fn the_shipped_routes_toml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let text = std::fs::read_to_string(&path).expect("routes.toml");
    // The admin token's digest comes from the environment (the Secret, or up.sh).
    let env = |name: &str| (name == "SWITCHYARD_ADMIN_TOKEN_SHA256").then(|| "0".repeat(64));
    if let Err(e) = Config::from_str_with_env(&path, &text, env) {
        panic!("routes.toml is invalid:\n{e}");
    }
}

#[test]
fn dlq_retention_is_a_duration_with_a_default_of_14_days() {
    let cfg = Config::from_str_with_env(Path::new("routes.toml"), BASE, |_| None).expect("valid");
    assert_eq!(cfg.dlq.retain, std::time::Duration::from_secs(14 * 86400));
    let text = format!("{BASE}\n[dlq]\nurl = \"sqlite://d.db\"\nretain = \"30days\"\n");
    let cfg = Config::from_str_with_env(Path::new("routes.toml"), &text, |_| None).expect("valid");
    assert_eq!(cfg.dlq.retain, std::time::Duration::from_secs(30 * 86400));
    let errs = errors(&format!(
        "{BASE}\n[dlq]\nurl = \"sqlite://d.db\"\nretain = \"forever\"\n"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains(":14:10: invalid duration \"forever\""),
        "{}",
        errs[0]
    );
}

#[test]
fn change_filters_on_a_webhook_route_and_unknown_operations_are_errors() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"a\"\nsource = \"orders\"\ntopic = \"t\"\nops = [\"insert\"]\n\
         [sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.orders\"]\n\
         [[routes]]\nname = \"b\"\nsource = \"db\"\nops = [\"upsert\"]\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("`ops` filters apply to postgres sources"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("unknown operation \"upsert\""),
        "{}",
        errs[1]
    );
}

#[test]
fn postgres_tls_settings_are_checked_when_the_file_is_loaded() {
    let source = |url: &str| {
        format!(
            "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.t\"]\n"
        )
    };
    let errs = errors(&source("postgres://u@h/db?sslmode=always"));
    assert!(
        errs[0].contains("sslmode `always` is not one of"),
        "{}",
        errs[0]
    );
    let errs = errors(&source("postgres://u@h/db?sslmode=verify-full"));
    assert!(errs[0].contains("need sslrootcert"), "{}", errs[0]);
    let cfg = Config::from_str_with_env(
        Path::new("/etc/switchyard/routes.toml"),
        &source("postgres://u@h/db?application_name=x&sslmode=verify-ca&sslrootcert=ca.pem"),
        |_| None,
    )
    .expect("valid");
    let switchyard::config::SourceKind::Postgres(pg) = &cfg.sources["db"].kind else {
        panic!("postgres source");
    };
    assert_eq!(
        pg.url, "postgres://u@h/db?application_name=x",
        "TLS keys are taken out of the url"
    );
    assert_eq!(pg.tls.mode, switchyard::config::PgSslMode::VerifyCa);
    assert_eq!(
        pg.tls.root_cert.as_deref(),
        Some(Path::new("/etc/switchyard/ca.pem"))
    );
}

#[test]
fn a_postgres_dlq_url_has_the_tls_settings_of_a_postgres_source() {
    let dlq = |url: &str| format!("{BASE}\n[dlq]\nurl = \"{url}\"\n");
    let errs = errors(&dlq("postgres://u@h/db?sslmode=always"));
    assert!(
        errs[0].contains("sslmode `always` is not one of"),
        "{}",
        errs[0]
    );
    let errs = errors(&dlq("postgres://u@h/db?sslmode=verify-full"));
    assert!(errs[0].contains("need sslrootcert"), "{}", errs[0]);
    let cfg = Config::from_str_with_env(
        Path::new("/etc/switchyard/routes.toml"),
        &dlq("postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=ca.pem"),
        |_| None,
    )
    .expect("valid");
    let switchyard::config::DlqStoreConfig::Postgres(url) = &cfg.dlq.store else {
        panic!("postgres store");
    };
    // The store reads the settings back from the url: the CA's path is made absolute.
    let (rest, tls) = switchyard::config::url_tls(url, Path::new("/elsewhere")).expect("tls");
    assert_eq!(rest, "postgres://u@h/db?application_name=x");
    assert_eq!(tls.mode, switchyard::config::PgSslMode::VerifyFull);
    assert_eq!(
        tls.root_cert.as_deref(),
        Some(Path::new("/etc/switchyard/ca.pem"))
    );
}

#[test]
fn snapshot_chunks_and_message_routes_are_checked() {
    let text = format!(
        "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.orders\"]\n\
         snapshot = \"initial\"\nsnapshot_chunk_rows = 0\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:17:23: snapshot_chunk_rows = 0 is out of range"),
        "{}",
        errs[0]
    );
    let text = format!(
        "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.orders\"]\n\
         [[routes]]\nname = \"all\"\nsource = \"db\"\nops = [\"insert\", \"message\"]\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("takes messages, which belong to no table")
            && errs[0].contains("topic = \"{source}.message\""),
        "{}",
        errs[0]
    );
    // A route of messages only gets `{source}.message` by default.
    let ok = format!(
        "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.orders\"]\n\
         snapshot = \"initial\"\n[[routes]]\nname = \"outbox\"\nsource = \"db\"\nops = [\"message\"]\n"
    );
    let config =
        Config::from_str_with_env(Path::new("conf/routes.toml"), &ok, |_| None).expect("valid");
    assert_eq!(
        config.routes[0].topic.parts().len(),
        2,
        "{{source}} and \".message\""
    );
    assert_eq!(config.routes[0].ops, vec!["m".to_string()]);
}

#[test]
fn route_filters_must_compile_and_name_fields_of_their_source() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"a\"\nsource = \"orders\"\ntopic = \"t\"\nfilter = \"data.amount >\"\n\
         [[routes]]\nname = \"b\"\nsource = \"orders\"\ntopic = \"t\"\nfilter = \"after.amount > 1\"\n\
         [router]\nunmatched = \"keep\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("conf/routes.toml:23:13: unknown unmatched policy \"keep\"")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(
            |e| e.starts_with("conf/routes.toml:16:10: route `a`: filter:")
                && e.contains("Syntax error")
        ),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with(
            "conf/routes.toml:21:10: route `b`: filter: `after` is not a field of webhook events"
        )),
        "{errs:?}"
    );
}

#[test]
fn transforms_are_checked_when_the_file_loads() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"a\"\nsource = \"orders\"\ntopic = \"t\"\n\
         [routes.transform]\nmask = {{ email = \"sha256\", phone = \"blur\" }}\ndrop = [\"email\"]\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("unknown mask \"blur\" for `phone`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("hashes `email`, which needs a key") && e.contains("mask_key")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("both drops and masks `email`")),
        "{errs:?}"
    );
    assert!(
        errs.iter().all(|e| e.starts_with("conf/routes.toml:17:")),
        "{errs:?}"
    );
}

#[test]
fn telemetry_takes_a_collector_url_and_a_sample_ratio_between_0_and_1() {
    let text = format!(
        "{BASE}\n[telemetry]\notlp_endpoint = \"collector:4318\"\nsample_ratio = 1.5\n[server]\nshutdown_timeout = \"soon\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("not an http(s) URL")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("not between 0 and 1")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("invalid duration \"soon\"")),
        "{errs:?}"
    );

    let ok = format!("{BASE}\n[telemetry]\notlp_endpoint = \"http://collector:4318\"\n");
    let config =
        Config::from_str_with_env(Path::new("conf/routes.toml"), &ok, |_| None).expect("valid");
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318/v1/traces"),
        "a collector's base URL gets the traces path"
    );
    assert_eq!(config.telemetry.sample_ratio, 1.0);
    assert_eq!(
        config.server.shutdown_timeout,
        std::time::Duration::from_secs(30)
    );
    let off =
        Config::from_str_with_env(Path::new("conf/routes.toml"), BASE, |_| None).expect("valid");
    assert_eq!(
        off.telemetry.otlp_endpoint, None,
        "no traces unless configured"
    );
}

#[test]
fn schema_registry_credentials_come_from_the_environment_and_never_show_in_debug_output() {
    use switchyard::config::RegistryAuth;
    let text = BASE.replace(
        "url = \"http://127.0.0.1:8081\"\n",
        "url = \"https://psrc-1.confluent.cloud\"\nusername = \"${SR_KEY}\"\npassword = \"${SR_SECRET}\"\n",
    );
    let cfg = Config::from_str_with_env(Path::new("routes.toml"), &text, |n| match n {
        "SR_KEY" => Some("KEY1".into()),
        "SR_SECRET" => Some("s3cr3t-value".into()),
        _ => None,
    })
    .expect("valid");
    let auth = cfg.schema_registry.auth.as_ref().expect("credentials");
    assert!(matches!(auth, RegistryAuth::Basic { username, .. } if username == "KEY1"));
    // As Confluent Cloud expects: base64 of "key:secret".
    assert_eq!(auth.header_value(), "Basic S0VZMTpzM2NyM3QtdmFsdWU=");
    assert!(!format!("{cfg:?}").contains("s3cr3t-value"));

    let text = BASE.replace(
        "url = \"http://127.0.0.1:8081\"\n",
        "url = \"http://127.0.0.1:8081\"\ntoken = \"tok-123\"\n",
    );
    let cfg = Config::from_str_with_env(Path::new("routes.toml"), &text, |_| None).expect("valid");
    let auth = cfg.schema_registry.auth.expect("token");
    assert_eq!(auth.header_value(), "Bearer tok-123");
    assert!(!format!("{auth:?}").contains("tok-123"));
}

#[test]
fn incomplete_or_conflicting_registry_credentials_are_reported_where_they_are() {
    let with = |lines: &str| {
        BASE.replace(
            "url = \"http://127.0.0.1:8081\"\n",
            &format!("url = \"http://127.0.0.1:8081\"\n{lines}"),
        )
    };
    let errs = errors(&with("password = \"p\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("conf/routes.toml:6:12: [schema_registry] `password` needs a `username`"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains("username = \"${SCHEMA_REGISTRY_USERNAME}\""),
        "{}",
        errs[0]
    );

    let errs = errors(&with("username = \"u\"\npassword = \"p\"\ntoken = \"t\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "conf/routes.toml:8:9: [schema_registry] has both a `token` and basic authentication"
        ),
        "{}",
        errs[0]
    );

    let errs = errors(&with("username = \"u\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("conf/routes.toml:6:12: [schema_registry] `username` needs a `password`"),
        "{}",
        errs[0]
    );

    let errs = errors(&with("username = \"a:b\"\npassword = \"p\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("`username` contains `:`"), "{}", errs[0]);

    // A control character (here a TOML `\t` escape) cannot go into an HTTP header.
    let errs = errors(&with("token = \"tok\\t\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("control character"), "{}", errs[0]);

    // An empty variable is a mistake, not "no password".
    let errs = errors_with_env(
        &with("username = \"u\"\npassword = \"${SR_SECRET}\"\n"),
        |n| (n == "SR_SECRET").then(String::new),
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:7:12: [schema_registry] `password` is empty"),
        "{}",
        errs[0]
    );
}

/// BASE with the `orders` source's authentication (lines 9 and 10) replaced by `auth`.
fn with_auth(auth: &str) -> String {
    BASE.replace("provider = \"none\"\nallow_unauthenticated = true\n", auth)
}

#[test]
fn a_webhook_source_without_provider_is_an_error_that_says_what_to_write() {
    let errs = errors(&with_auth(""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "conf/routes.toml:8:8: webhook source `orders` has no `provider`: it would accept requests from anyone"
        ),
        "{}",
        errs[0]
    );
    for fix in [
        "provider = \"stripe\"",
        "secrets = [\"${ORDERS_WEBHOOK_SECRET}\"]",
        "token = \"${WEBHOOK_TOKEN}\"",
        "allow_unauthenticated = true",
    ] {
        assert!(errs[0].contains(fix), "{fix} missing from: {}", errs[0]);
    }
}

#[test]
fn provider_none_needs_a_token_or_an_explicit_allow_unauthenticated() {
    let errs = errors(&with_auth("provider = \"none\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "conf/routes.toml:9:12: provider = \"none\" on source `orders` has no `token`"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains("token = \"${WEBHOOK_TOKEN}\"")
            && errs[0].contains("allow_unauthenticated = true"),
        "{}",
        errs[0]
    );
    let errs = errors(&with_auth(
        "provider = \"none\"\nallow_unauthenticated = false\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:10:25: "),
        "{}",
        errs[0]
    );
    // Both, or the key on a signed provider: contradictions, refused.
    let errs = errors(&with_auth(
        "provider = \"none\"\ntoken = \"t\"\nallow_unauthenticated = true\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:11:25: "),
        "{}",
        errs[0]
    );
    let errs = errors(&with_auth(
        "provider = \"github\"\nsecrets = [\"s\"]\nallow_unauthenticated = true\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "conf/routes.toml:11:25: `allow_unauthenticated` applies to provider = \"none\""
        ),
        "{}",
        errs[0]
    );
    // The two accepted forms.
    for ok in [
        "provider = \"none\"\ntoken = \"t0ken\"\n",
        "provider = \"none\"\nallow_unauthenticated = true\n",
    ] {
        Config::from_str_with_env(Path::new("routes.toml"), &with_auth(ok), |_| None)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn credential_and_signature_headers_cannot_be_copied_into_kafka() {
    for (header, column) in [
        ("Authorization", 12),
        ("cookie", 12),
        ("X-Hub-Signature-256", 12),
        ("X-Shopify-Hmac-Sha256", 12),
        ("Stripe-Signature", 12),
        ("X-Slack-Signature", 12),
        ("webhook-signature", 12),
        ("X-Gitlab-Token", 12),
        ("Proxy-Authorization", 12),
    ] {
        let text = with_auth(&format!(
            "provider = \"github\"\nsecrets = [\"s\"]\nheaders = [\"X-GitHub-Hook-ID\", \"{header}\"]\n"
        ));
        let column = column + "\"X-GitHub-Hook-ID\", ".len();
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!(
                "conf/routes.toml:11:{column}: `{header}` carries a credential or a signature"
            )),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].contains(&format!("remove \"{header}\" from `headers`")),
            "{}",
            errs[0]
        );
    }
    // An hmac source's own signature header, whatever its name.
    let errs = errors(&with_auth(
        "provider = \"hmac\"\nsecrets = [\"s\"]\nsignature_header = \"X-Sig\"\nheaders = [\"x-sig\"]\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("conf/routes.toml:12:12: `x-sig`"),
        "{}",
        errs[0]
    );
    // Other headers are copied as before.
    let cfg = Config::from_str_with_env(
        Path::new("routes.toml"),
        &with_auth("provider = \"github\"\nsecrets = [\"s\"]\nheaders = [\"X-GitHub-Hook-ID\"]\n"),
        |_| None,
    )
    .expect("valid");
    let switchyard::config::SourceKind::Webhook(w) = &cfg.sources["orders"].kind else {
        panic!("a webhook source");
    };
    assert_eq!(w.headers, vec!["x-github-hook-id".to_string()]);
}

/// `file:line:column` of the first `needle` in `text` (1-based, as the errors print it).
fn at(text: &str, needle: &str) -> String {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in the text"));
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("conf/routes.toml:{line}:{column}: ")
}

/// Asserts that one error starts at `needle`'s position with `message`, and gives help.
fn reported(errs: &[String], text: &str, needle: &str, message: &str) {
    let want = format!("{}{message}", at(text, needle));
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&want) && e.contains("help:")),
        "no error starting {want:?} with help in {errs:#?}"
    );
}

#[test]
fn admin_tokens_and_clients_are_checked_where_they_are_written() {
    let digest = "a".repeat(64);
    let text = format!(
        "{BASE}\n[admin.tokens.\"bad name!\"]\nrole = \"viewer\"\nsha256 = \"{digest}\"\n\
         [admin.tokens.alice]\nrole = \"owner\"\nsha256 = \"b{digest}\"\n\
         [admin.tokens.bob]\nrole = \"operator\"\nsha256 = \"sha256:{digest}\"\n\
         [admin.clients.carol]\ncommon_name = \"carol\"\nrole = \"admin\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    reported(
        &errs,
        &text,
        "[admin.tokens.\"bad name!\"]",
        "`bad name!` is not a usable token name",
    );
    reported(&errs, &text, "\"owner\"", "unknown role \"owner\"");
    reported(
        &errs,
        &text,
        &format!("\"b{digest}\""),
        "token `alice`: sha256 is not 64 hexadecimal digits",
    );
    reported(
        &errs,
        &text,
        &format!("\"sha256:{digest}\""),
        "tokens `bad name!` and `bob` have the same digest",
    );
    reported(
        &errs,
        &text,
        "[admin.clients.carol]",
        "[admin.clients.carol] needs client certificates verified",
    );
}

#[test]
fn postgres_table_selectors_placeholders_and_webhook_filters_are_checked_where_they_are_written() {
    let text = format!(
        "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\n\
         tables = [\"public.orders\", \"orders\"]\nexclude_tables = [\"public.\"]\n\
         unavailable_value_placeholder = \"hex:abc\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    reported(
        &errs,
        &text,
        "\"orders\"]",
        "`orders` in `tables` is not schema.table",
    );
    reported(
        &errs,
        &text,
        "\"public.\"",
        "`public.` in `exclude_tables` is not schema.table",
    );
    reported(
        &errs,
        &text,
        "\"hex:abc\"",
        "unavailable_value_placeholder `hex:abc`: Odd number of digits",
    );
    // A webhook filter on a route of a (valid) postgres source.
    let text = format!(
        "{BASE}\n[sources.db]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\n\
         tables = [\"public.orders\"]\n\
         [[routes]]\nname = \"changes\"\nsource = \"db\"\nevent_types = [\"order.*\"]\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    reported(
        &errs,
        &text,
        "[\"order.*\"]",
        "`event_types` filters apply to webhook sources, and `db` is a postgres source",
    );
}
