//! The validators of the single sections: `[server]`, `[kafka]`, `[schema_registry]`, `[dlq]`,
//! `[telemetry]`, `[router]`. `validate.rs` reads the file and calls them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::Diagnostics;
use super::raw::*;
use super::validate::duration;
use super::*;

pub(super) const DEFAULT_RETAIN: Duration = Duration::from_secs(14 * 24 * 3600);

pub(super) fn validate_server(raw: RawServer, diag: &mut Diagnostics) -> Option<ServerConfig> {
    let listen = match &raw.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                diag.at(
                    l.span(),
                    format!("`{}` is not an IP address and port", l.get_ref()),
                    Some("write e.g. listen = \"127.0.0.1:8080\"".into()),
                );
                None
            }
        },
    };
    let admin_listen = match &raw.admin_listen {
        None => Some(None),
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && listen.is_some_and(|p| p == a) => {
                diag.at(
                    l.span(),
                    format!("admin_listen `{a}` is the same address as listen"),
                    Some(
                        "give the admin listener its own port, e.g. admin_listen = \"127.0.0.1:9090\"".into(),
                    ),
                );
                None
            }
            Ok(a) => Some(Some(a)),
            Err(_) => {
                diag.at(
                    l.span(),
                    format!("`{}` is not an IP address and port", l.get_ref()),
                    Some("write e.g. admin_listen = \"127.0.0.1:9090\"".into()),
                );
                None
            }
        },
    };
    let max_body_bytes = match &raw.max_body_size {
        None => Some(1024 * 1024),
        Some(v) => size(
            v,
            "write bytes (1048576) or a size with a unit: \"512KiB\", \"1MiB\"",
            diag,
        ),
    };
    let ack_timeout = match &raw.ack_timeout {
        None => Some(Duration::from_secs(10)),
        Some(v) => duration(v, diag),
    };
    let shutdown_timeout = match &raw.shutdown_timeout {
        None => Some(Duration::from_secs(30)),
        Some(v) => duration(v, diag),
    };
    let http_threads = match &raw.http_threads {
        None => Some(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
        ),
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=256).contains(&n) => Some(n),
            _ => {
                diag.at(
                    v.span(),
                    "http_threads must be between 1 and 256",
                    Some("leave it out for one thread per CPU core".into()),
                );
                None
            }
        },
    };
    let body_timeout = match &raw.body_timeout {
        None => Some(super::DEFAULT_BODY_TIMEOUT),
        Some(v) => duration(v, diag),
    };
    let max_connections = match &raw.max_connections {
        None => Some(super::DEFAULT_MAX_CONNECTIONS),
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
            _ => {
                diag.at(
                    v.span(),
                    "max_connections must be between 1 and 1000000",
                    Some(
                        "leave it out for 1024 (the process needs that many file descriptors and a few more)"
                            .into(),
                    ),
                );
                None
            }
        },
    };
    let max_buffered_bytes = match &raw.max_buffered_bytes {
        None => Some(super::DEFAULT_MAX_BUFFERED_BYTES),
        Some(v) => size(v, "write bytes or a size with a unit, e.g. \"64MiB\"", diag),
    };
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        max_body_bytes: max_body_bytes?,
        ack_timeout: ack_timeout?,
        shutdown_timeout: shutdown_timeout?,
        http_threads: http_threads?,
        body_timeout: body_timeout?,
        max_connections: max_connections?,
        max_buffered_bytes: max_buffered_bytes?,
    })
}

/// A positive size (`parse_size`), or an error at its span with `help`.
pub(super) fn size(v: &Spanned<SizeValue>, help: &str, diag: &mut Diagnostics) -> Option<usize> {
    match parse_size(v.get_ref()) {
        Some(n) if n > 0 => Some(n),
        _ => {
            diag.at(v.span(), "invalid size", Some(help.to_string()));
            None
        }
    }
}

/// Parses `1048576`, "512KiB", "1MiB", "2MB", "100B".
pub(crate) fn parse_size(v: &SizeValue) -> Option<usize> {
    match v {
        SizeValue::Bytes(n) => usize::try_from(*n).ok(),
        SizeValue::Text(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: usize = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" | "kB" => 1000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            n.checked_mul(mult)
        }
    }
}

pub(super) fn positive_i32(
    v: &Option<Spanned<i64>>,
    default: i32,
    what: &str,
    diag: &mut Diagnostics,
) -> Option<i32> {
    match v {
        None => Some(default),
        Some(n) => match i32::try_from(*n.get_ref()) {
            Ok(x) if x >= 1 => Some(x),
            _ => {
                diag.at(n.span(), format!("{what} must be at least 1"), None);
                None
            }
        },
    }
}

pub(super) fn validate_kafka(raw: RawKafka, diag: &mut Diagnostics) -> Option<KafkaConfig> {
    let bootstrap = raw.bootstrap_servers.get_ref().trim().to_string();
    if bootstrap.is_empty() {
        diag.at(
            raw.bootstrap_servers.span(),
            "bootstrap_servers is empty",
            Some("write host:port[,host:port…]".into()),
        );
    }
    let partitions = positive_i32(&raw.partitions, 3, "partitions", diag);
    let replication_factor = positive_i32(&raw.replication_factor, 1, "replication_factor", diag);
    // 20 s, not librdkafka's 300 s or the 30 s of earlier versions: it bounds how long a new
    // CDC leader waits after taking over from one that stopped answering (docs/operations.md).
    let delivery_timeout = match &raw.delivery_timeout {
        None => Some(Duration::from_secs(20)),
        Some(v) => duration(v, diag),
    };
    let retry_max_elapsed = match &raw.retry_max_elapsed {
        None => Some(Duration::from_secs(300)),
        Some(v) => duration(v, diag),
    };
    let max_in_flight = match &raw.max_in_flight {
        None => Some(10_000),
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(x) if (1..=1_000_000).contains(&x) => Some(x),
            _ => {
                diag.at(
                    n.span(),
                    "max_in_flight must be between 1 and 1000000",
                    None,
                );
                None
            }
        },
    };
    let mut properties = BTreeMap::new();
    for (key, value) in raw.properties {
        let text = match value.get_ref() {
            PropertyValue::Text(s) => s.clone(),
            PropertyValue::Integer(i) => i.to_string(),
            PropertyValue::Bool(b) => b.to_string(),
        };
        if matches!(
            key.as_str(),
            "bootstrap.servers" | "enable.idempotence" | "acks"
        ) {
            diag.at(
                value.span(),
                format!("`{key}` cannot be set in [kafka.properties]"),
                Some(match key.as_str() {
                    "bootstrap.servers" => "use [kafka].bootstrap_servers".to_string(),
                    _ => "switchyard always uses an idempotent producer with acks=all, which at-least-once delivery in source order depends on".to_string(),
                }),
            );
            continue;
        }
        properties.insert(key, text);
    }
    Some(KafkaConfig {
        bootstrap_servers: bootstrap,
        partitions: partitions?,
        replication_factor: replication_factor?,
        delivery_timeout: delivery_timeout?,
        retry_max_elapsed: retry_max_elapsed?,
        max_in_flight: max_in_flight?,
        properties,
    })
}

pub(super) fn validate_registry(
    raw: RawSchemaRegistry,
    diag: &mut Diagnostics,
) -> Option<RegistryConfig> {
    let url = raw.url.get_ref().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        diag.at(
            raw.url.span(),
            format!("schema registry url `{url}` is not an http(s) URL"),
            Some("write e.g. url = \"http://127.0.0.1:8081\"".into()),
        );
        return None;
    }
    let timeout = match &raw.timeout {
        None => Some(Duration::from_secs(10)),
        Some(v) => duration(v, diag),
    };
    let auth = registry_auth(&raw, diag);
    Some(RegistryConfig {
        url,
        timeout: timeout?,
        auth: auth?,
    })
}

/// `[schema_registry]` credentials: `username` with `password`, or `token`, or none.
pub(super) fn registry_auth(
    raw: &RawSchemaRegistry,
    diag: &mut Diagnostics,
) -> Option<Option<RegistryAuth>> {
    let mut ok = true;
    let mut non_empty = |v: &Spanned<String>, key: &str, var: &str| -> bool {
        if v.get_ref().is_empty() {
            diag.at(
                v.span(),
                format!("[schema_registry] `{key}` is empty"),
                Some(format!(
                    "set {key} = \"${{{var}}}\" with a non-empty environment variable"
                )),
            );
            false
        } else {
            true
        }
    };
    for (v, key, var) in [
        (&raw.username, "username", "SCHEMA_REGISTRY_USERNAME"),
        (&raw.password, "password", "SCHEMA_REGISTRY_PASSWORD"),
        (&raw.token, "token", "SCHEMA_REGISTRY_TOKEN"),
    ] {
        if let Some(v) = v {
            ok &= non_empty(v, key, var);
        }
    }
    if let (Some(t), true) = (&raw.token, raw.username.is_some() || raw.password.is_some()) {
        diag.at(
            t.span(),
            "[schema_registry] has both a `token` and basic authentication",
            Some("keep either `token` or `username` and `password`".into()),
        );
        ok = false;
    }
    match (&raw.username, &raw.password) {
        (Some(u), None) => {
            diag.at(
                u.span(),
                "[schema_registry] `username` needs a `password`",
                Some("add password = \"${SCHEMA_REGISTRY_PASSWORD}\"".into()),
            );
            ok = false;
        }
        (None, Some(p)) => {
            diag.at(
                p.span(),
                "[schema_registry] `password` needs a `username`",
                Some("add username = \"${SCHEMA_REGISTRY_USERNAME}\"".into()),
            );
            ok = false;
        }
        _ => {}
    }
    if let Some(u) = raw.username.as_ref().filter(|u| u.get_ref().contains(':')) {
        diag.at(
            u.span(),
            "[schema_registry] `username` contains `:`, which HTTP basic authentication cannot carry",
            Some("check the value: a user name or API key has no `:`".into()),
        );
        ok = false;
    }
    for v in [&raw.username, &raw.password, &raw.token]
        .into_iter()
        .flatten()
    {
        if v.get_ref().chars().any(char::is_control) {
            diag.at(
                v.span(),
                "[schema_registry] credentials contain a control character (a newline?), which an HTTP header cannot carry",
                Some("check the environment variable's value (a trailing newline from a file?)".into()),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(match (&raw.username, &raw.password, &raw.token) {
        (Some(u), Some(p), None) => Some(RegistryAuth::Basic {
            username: u.get_ref().clone(),
            password: Secret(p.get_ref().as_bytes().to_vec()),
        }),
        (None, None, Some(t)) => Some(RegistryAuth::Bearer(Secret(
            t.get_ref().as_bytes().to_vec(),
        ))),
        _ => None,
    })
}

pub(super) fn validate_dlq(
    raw: RawDlq,
    config_path: &Path,
    diag: &mut Diagnostics,
) -> Option<DlqConfig> {
    let retain = match &raw.retain {
        None => Some(DEFAULT_RETAIN),
        Some(v) => duration(v, diag),
    };
    let store = validate_dlq_url(&raw, config_path, diag);
    Some(DlqConfig {
        store: store?,
        retain: retain?,
        mask_payloads: raw.mask_payloads.unwrap_or(false),
    })
}

pub(super) fn validate_dlq_url(
    raw: &RawDlq,
    config_path: &Path,
    diag: &mut Diagnostics,
) -> Option<DlqStoreConfig> {
    let url = raw.url.get_ref();
    if let Some(rest) = url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            diag.at(
                raw.url.span(),
                "sqlite:// needs a file path",
                Some("write url = \"sqlite://dlq/switchyard.db\"".into()),
            );
            return None;
        }
        let p = Path::new(rest);
        let resolved = if p.is_absolute() {
            p.to_path_buf()
        } else {
            Config::base_dir(config_path).join(p)
        };
        Some(DlqStoreConfig::Sqlite(resolved))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The same sslmode/sslrootcert handling as postgres sources; a relative sslrootcert
        // is made absolute here (the store reads the settings back from the URL).
        match super::postgres::url_tls(url, &Config::base_dir(config_path)) {
            Ok((_, tls)) if tls.root_cert.is_none() => Some(DlqStoreConfig::Postgres(url.clone())),
            Ok((rest, tls)) => Some(DlqStoreConfig::Postgres(super::postgres::url_with_tls(
                &rest, &tls,
            ))),
            Err(e) => {
                diag.at(raw.url.span(), e.message, Some(e.help));
                None
            }
        }
    } else {
        diag.at(
            raw.url.span(),
            "the dead-letter store url must start with sqlite:// or postgres://",
            Some("write url = \"sqlite://dlq/switchyard.db\" for the embedded store".into()),
        );
        None
    }
}

pub(super) fn validate_telemetry(
    raw: RawTelemetry,
    diag: &mut Diagnostics,
) -> Option<TelemetryConfig> {
    let mut ok = true;
    let otlp_endpoint = match &raw.otlp_endpoint {
        None => None,
        Some(e) if e.get_ref().is_empty() => None,
        Some(e) => match reqwest::Url::parse(e.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                // A collector's base URL gets the traces path, as OTEL_EXPORTER_OTLP_ENDPOINT.
                let mut url = url;
                if url.path() == "/" || url.path().is_empty() {
                    url.set_path("/v1/traces");
                }
                Some(url.to_string())
            }
            _ => {
                diag.at(
                    e.span(),
                    format!("`{}` is not an http(s) URL", e.get_ref()),
                    Some(
                        "write the collector's OTLP/HTTP address, e.g. otlp_endpoint = \"http://otel-collector:4318\""
                            .into(),
                    ),
                );
                ok = false;
                None
            }
        },
    };
    let sample_ratio = match &raw.sample_ratio {
        None => 1.0,
        Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            diag.at(
                r.span(),
                format!("sample_ratio {} is not between 0 and 1", r.get_ref()),
                Some("write e.g. sample_ratio = 0.1 to keep one trace in ten".into()),
            );
            ok = false;
            1.0
        }
    };
    let service_name = raw
        .service_name
        .map(|s| s.into_inner())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "switchyard".into());
    ok.then_some(TelemetryConfig {
        otlp_endpoint,
        sample_ratio,
        service_name,
    })
}

pub(super) fn validate_router(raw: RawRouter, diag: &mut Diagnostics) -> Option<RouterConfig> {
    let unmatched = match raw
        .unmatched
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("drop", _)) => Unmatched::Drop,
        Some(("dlq", _)) => Unmatched::Dlq,
        Some((other, span)) => {
            diag.at(
                span,
                format!("unknown unmatched policy \"{other}\""),
                Some("write \"drop\" (acknowledge and count) or \"dlq\" (store for replay)".into()),
            );
            return None;
        }
    };
    let mask_key = match &raw.mask_key {
        None => None,
        Some(k) if k.get_ref().is_empty() => {
            diag.at(
                k.span(),
                "mask_key is empty",
                Some("set mask_key = \"${SWITCHYARD_MASK_KEY}\" to a long random value".into()),
            );
            return None;
        }
        Some(k) => Some(Secret(k.get_ref().as_bytes().to_vec())),
    };
    Some(RouterConfig {
        unmatched,
        watch: raw.watch.unwrap_or(false),
        mask_key,
    })
}
