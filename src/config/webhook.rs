//! Validation of `[sources.<name>]` tables with `type = "webhook"` (path checked by the caller).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_spanned::Spanned;

use super::diagnostic::Diagnostics;
use super::raw::RawWebhookSource;
use super::sections::size;
use super::validate::parse_duration;
use super::{
    HmacAlgorithm, HmacSpec, Secret, SignatureEncoding, WebhookProvider, WebhookSourceConfig,
    WhenUnavailable,
};

/// Slack retries a delivery it has no answer to after 3 s: a Slack source answers within 2 s
/// unless its `ack_timeout` says otherwise.
const SLACK_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// GitHub fails a delivery it has no answer to after 10 s (and does not retry it).
const GITHUB_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Shopify fails a delivery after 5 s (and removes subscriptions that keep failing).
const SHOPIFY_ACK_TIMEOUT: Duration = Duration::from_secs(3);

const PROVIDERS: &str = "stripe, github, shopify, slack, standard, hmac, none";

/// The providers that sign requests.
const SIGNED: &str = "github, shopify, slack, standard, hmac";

/// `name` as the stem of an environment variable: `ORDERS_V2` for `orders-v2`.
fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

fn duration(v: &Spanned<String>, allow_zero: bool, diag: &mut Diagnostics) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if allow_zero || !d.is_zero() => Some(d),
        result => {
            let why = result
                .err()
                .unwrap_or_else(|| "zero is not allowed here".into());
            diag.at(
                v.span(),
                format!("invalid duration \"{}\": {why}", v.get_ref()),
                Some("write a number with a unit, e.g. \"5m\", \"24h\"".into()),
            );
            None
        }
    }
}

/// The lowest rate limit: one request a day. Below it the wait a refused request is told
/// (`Retry-After`) would pass any clock's range; `inf` is no limit and is written by leaving
/// `rate_limit` out.
const MIN_RATE_PER_SEC: f64 = 1.0 / 86_400.0;

/// Parses "100/s", "6000/m", "10/h" into requests per second (finite, at least one a day).
fn rate(text: &str) -> Option<f64> {
    let (n, per) = text.split_once('/')?;
    let n: f64 = n.trim().parse().ok().filter(|n: &f64| n.is_finite())?;
    let secs = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return None,
    };
    Some(n / secs).filter(|r| *r >= MIN_RATE_PER_SEC)
}

/// A JSON Pointer (RFC 6901): empty or starting with `/`.
fn pointer(v: &Option<Spanned<String>>, diag: &mut Diagnostics) -> Option<Option<String>> {
    match v {
        None => Some(None),
        Some(p) if p.get_ref().starts_with('/') => Some(Some(p.get_ref().clone())),
        Some(p) => {
            diag.at(
                p.span(),
                format!("`{}` is not a JSON Pointer", p.get_ref()),
                Some("write e.g. \"/data/object/id\"".into()),
            );
            None
        }
    }
}

/// Checks the webhook keys of one source; `path` was checked already.
pub(super) fn validate(
    name: &str,
    path: String,
    src: &RawWebhookSource,
    default_max_body: usize,
    diag: &mut Diagnostics,
) -> Option<WebhookSourceConfig> {
    // Fail closed: a source names how its requests are authenticated (before 0.x a source
    // without `provider` took requests from anyone).
    let Some(provider_name) = src.provider.as_ref().map(|p| p.get_ref().as_str()) else {
        diag.at(
            src.kind.span(),
            format!("webhook source `{name}` has no `provider`: it would accept requests from anyone"),
            Some(format!(
                "add provider = \"stripe\" (or {SIGNED}) with secrets = [\"${{{}_WEBHOOK_SECRET}}\"]; for a sender that cannot sign, provider = \"none\" with token = \"${{WEBHOOK_TOKEN}}\", or allow_unauthenticated = true to take unauthenticated requests knowingly",
                env_name(name)
            )),
        );
        return None;
    };
    let provider_span = src.provider.as_ref().map(Spanned::span);
    let mut ok = check_authentication_keys(name, provider_name, provider_span.clone(), src, diag);
    let provider = provider_of(
        name,
        provider_name,
        provider_span.clone(),
        src,
        &mut ok,
        diag,
    )?;
    let signed = !matches!(provider, WebhookProvider::None { .. });
    let secrets_raw: Vec<&Spanned<String>> = src
        .secrets
        .as_ref()
        .map(|s| s.get_ref().iter().collect())
        .unwrap_or_default();
    if signed && secrets_raw.is_empty() {
        diag.at(
            src.secrets
                .as_ref()
                .map(Spanned::span)
                .or(provider_span.clone())
                .unwrap_or(0..0),
            format!("provider = \"{provider_name}\" on source `{name}` needs at least one secret"),
            Some(format!(
                "add secrets = [\"${{{}_WEBHOOK_SECRET}}\"] (two during a rotation)",
                env_name(name)
            )),
        );
        ok = false;
    }
    let secrets = decode_secrets(&secrets_raw, &provider, &mut ok, diag);
    let tolerance = match &src.tolerance {
        None => Some(Duration::from_secs(300)),
        Some(t) => duration(t, false, diag),
    };
    let max_body_bytes = match &src.max_body_size {
        None => Some(default_max_body),
        Some(v) => size(
            v,
            "write bytes (1048576) or a size with a unit: \"512KiB\", \"1MiB\"",
            diag,
        ),
    };
    let rate_limit = match &src.rate_limit {
        None => Some(None),
        Some(r) => match rate(r.get_ref()) {
            Some(x) => Some(Some(x)),
            None => {
                diag.at(
                    r.span(),
                    format!("invalid rate \"{}\"", r.get_ref()),
                    Some("write requests per unit of time, from one a day (\"0.05/h\") up, e.g. \"100/s\" or \"6000/m\"".into()),
                );
                None
            }
        },
    };
    let dedupe_window = match &src.dedupe_window {
        None => Some(Duration::from_secs(24 * 3600)),
        Some(w) => duration(w, true, diag),
    };
    let when_unavailable = match &src.when_unavailable {
        None => Some(WhenUnavailable::default_for(&provider)),
        Some(w) => diag.keyword(
            w,
            "when_unavailable",
            &[
                ("reject", WhenUnavailable::Reject),
                ("dead_letter", WhenUnavailable::DeadLetter),
            ],
            "write \"reject\" (answer 503) or \"dead_letter\" (store in the DLQ, answer 200)",
        ),
    };
    let ack_timeout = match &src.ack_timeout {
        None if matches!(provider, WebhookProvider::Slack) => Some(Some(SLACK_ACK_TIMEOUT)),
        None if matches!(provider, WebhookProvider::Github) => Some(Some(GITHUB_ACK_TIMEOUT)),
        None if matches!(provider, WebhookProvider::Shopify) => Some(Some(SHOPIFY_ACK_TIMEOUT)),
        None => Some(None),
        Some(t) => duration(t, false, diag).map(Some),
    };
    let id_pointer = pointer(&src.id_pointer, diag);
    let type_pointer = pointer(&src.type_pointer, diag);
    let headers = copied_headers(name, src, &mut ok, diag);
    let _ = &src.kind;
    if !ok {
        return None;
    }
    Some(WebhookSourceConfig {
        path,
        provider,
        secrets,
        tolerance: tolerance?,
        max_body_bytes: max_body_bytes?,
        rate_limit: rate_limit?,
        dedupe_window: dedupe_window?,
        headers,
        when_unavailable: when_unavailable?,
        ack_timeout: ack_timeout?,
        id_pointer: id_pointer?,
        type_pointer: type_pointer?,
    })
}

/// The keys that say how a request is authenticated agree with the provider: `token` and
/// `allow_unauthenticated` only with provider = "none", and one of them there (fail closed);
/// the generic HMAC keys only with provider = "hmac". False once something was reported.
fn check_authentication_keys(
    name: &str,
    provider_name: &str,
    provider_span: Option<std::ops::Range<usize>>,
    src: &RawWebhookSource,
    diag: &mut Diagnostics,
) -> bool {
    let mut ok = true;
    let open = src.allow_unauthenticated.as_ref();
    if let Some(a) = open
        && provider_name != "none"
    {
        diag.at(
            a.span(),
            format!("`allow_unauthenticated` applies to provider = \"none\", and source `{name}` uses \"{provider_name}\""),
            Some("remove `allow_unauthenticated`: this provider's signature authenticates requests".into()),
        );
        ok = false;
    }
    if provider_name == "none" {
        match (&src.token, open) {
            (Some(_), Some(a)) if *a.get_ref() => {
                diag.at(
                    a.span(),
                    format!("source `{name}` sets both `token` and allow_unauthenticated = true"),
                    Some("remove allow_unauthenticated (the token authenticates requests), or remove `token`".into()),
                );
                ok = false;
            }
            (None, None) => {
                diag.at(
                    provider_span.clone().unwrap_or(0..0),
                    format!("provider = \"none\" on source `{name}` has no `token`: it would accept requests from anyone"),
                    Some("add token = \"${WEBHOOK_TOKEN}\" (senders send Authorization: Bearer <token>), or allow_unauthenticated = true to take unauthenticated requests knowingly".into()),
                );
                ok = false;
            }
            (None, Some(a)) if !*a.get_ref() => {
                diag.at(
                    a.span(),
                    format!("provider = \"none\" on source `{name}` has no `token` and allow_unauthenticated = false: nothing could authenticate a request"),
                    Some("add token = \"${WEBHOOK_TOKEN}\", or write allow_unauthenticated = true".into()),
                );
                ok = false;
            }
            _ => {}
        }
    }
    // Keys that only one provider reads.
    let hmac_only = [
        ("signature_header", &src.signature_header),
        ("algorithm", &src.algorithm),
        ("encoding", &src.encoding),
        ("prefix", &src.prefix),
        ("timestamp_header", &src.timestamp_header),
    ];
    if provider_name != "hmac" {
        for (key, v) in &hmac_only {
            if let Some(v) = v {
                diag.at(
                    v.span(),
                    format!("`{key}` applies to provider = \"hmac\", and source `{name}` uses \"{provider_name}\""),
                    Some(format!("remove `{key}`, or set provider = \"hmac\"")),
                );
                ok = false;
            }
        }
    }
    if let (Some(t), false) = (&src.token, provider_name == "none") {
        diag.at(
            t.span(),
            format!("`token` applies to provider = \"none\", and source `{name}` uses \"{provider_name}\""),
            Some("signed providers authenticate with `secrets`; remove `token`".into()),
        );
        ok = false;
    }
    ok
}

/// The request headers `headers` names, lowercase, to copy into each event. Credential and
/// signature headers are never copied into Kafka (nor kept in the DLQ): naming one is reported
/// and clears `ok`.
fn copied_headers(
    name: &str,
    src: &RawWebhookSource,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Vec<String> {
    let own_signature = src
        .signature_header
        .as_ref()
        .map(|h| h.get_ref().to_ascii_lowercase());
    let mut headers = Vec::new();
    for h in src
        .headers
        .as_ref()
        .map(|h| h.get_ref().as_slice())
        .unwrap_or_default()
    {
        let lower = h.get_ref().to_ascii_lowercase();
        if crate::event::is_secret_header(&lower)
            || own_signature.as_deref() == Some(lower.as_str())
        {
            diag.at(
                h.span(),
                format!("`{}` carries a credential or a signature: source `{name}` never copies it into Kafka or the DLQ", h.get_ref()),
                Some(format!("remove \"{}\" from `headers`; switchyard checks the request's signature or token itself", h.get_ref())),
            );
            *ok = false;
        } else {
            headers.push(lower);
        }
    }
    headers
}

/// The secrets' key bytes (Standard Webhooks' `whsec_` base64 decoded); an empty or undecodable
/// one is reported and clears `ok`.
fn decode_secrets(
    secrets_raw: &[&Spanned<String>],
    provider: &WebhookProvider,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for s in secrets_raw {
        let text = s.get_ref();
        if text.is_empty() {
            diag.at(
                s.span(),
                "this secret is empty",
                Some("check the environment variable it comes from".into()),
            );
            *ok = false;
            continue;
        }
        if matches!(provider, WebhookProvider::Standard) {
            // Standard Webhooks secrets are `whsec_<base64 key>`.
            match BASE64.decode(text.strip_prefix("whsec_").unwrap_or(text)) {
                Ok(key) if !key.is_empty() => secrets.push(Secret(key)),
                _ => {
                    diag.at(
                        s.span(),
                        "a Standard Webhooks secret is `whsec_` followed by base64",
                        Some("copy the secret exactly as the sender shows it, e.g. \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"".into()),
                    );
                    *ok = false;
                }
            }
        } else {
            secrets.push(Secret(text.as_bytes().to_vec()));
        }
    }
    secrets
}

/// The signature scheme `provider_name` names, with its own keys checked (a problem is
/// reported and clears `ok`); `None` for an unknown provider.
fn provider_of(
    name: &str,
    provider_name: &str,
    provider_span: Option<std::ops::Range<usize>>,
    src: &RawWebhookSource,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Option<WebhookProvider> {
    Some(match provider_name {
        "none" => {
            if let Some(s) = &src.secrets {
                diag.at(
                    s.span(),
                    format!("source `{name}` has no signature scheme (provider = \"none\"), so `secrets` would be ignored"),
                    Some(format!("set provider to one of {PROVIDERS}, or use token = \"${{TOKEN}}\" for a static bearer token")),
                );
                *ok = false;
            }
            let token = src.token.as_ref().and_then(|t| {
                if t.get_ref().is_empty() {
                    diag.at(
                        t.span(),
                        "the token is empty",
                        Some("set token = \"${WEBHOOK_TOKEN}\" with a non-empty variable".into()),
                    );
                    *ok = false;
                    None
                } else {
                    Some(Secret(t.get_ref().as_bytes().to_vec()))
                }
            });
            WebhookProvider::None { token }
        }
        "stripe" => WebhookProvider::Stripe,
        "github" => WebhookProvider::Github,
        "shopify" => WebhookProvider::Shopify,
        "slack" => WebhookProvider::Slack,
        "standard" => WebhookProvider::Standard,
        "hmac" => {
            let header = match &src.signature_header {
                Some(h) if !h.get_ref().is_empty() => h.get_ref().to_ascii_lowercase(),
                _ => {
                    diag.at(
                        provider_span.clone().unwrap_or(0..0),
                        format!("provider = \"hmac\" on source `{name}` needs `signature_header`"),
                        Some("add e.g. signature_header = \"X-Signature\"".into()),
                    );
                    *ok = false;
                    String::new()
                }
            };
            let algorithm = match &src.algorithm {
                None => Some(HmacAlgorithm::Sha256),
                Some(a) => diag.keyword(
                    a,
                    "algorithm",
                    &[
                        ("sha256", HmacAlgorithm::Sha256),
                        ("sha1", HmacAlgorithm::Sha1),
                        ("sha512", HmacAlgorithm::Sha512),
                    ],
                    "write \"sha1\", \"sha256\" or \"sha512\"",
                ),
            };
            let encoding = match &src.encoding {
                None => Some(SignatureEncoding::Hex),
                Some(e) => diag.keyword(
                    e,
                    "encoding",
                    &[
                        ("hex", SignatureEncoding::Hex),
                        ("base64", SignatureEncoding::Base64),
                    ],
                    "write \"hex\" or \"base64\"",
                ),
            };
            *ok &= algorithm.is_some() && encoding.is_some();
            let algorithm = algorithm.unwrap_or(HmacAlgorithm::Sha256);
            let encoding = encoding.unwrap_or(SignatureEncoding::Hex);
            WebhookProvider::Hmac(HmacSpec {
                header,
                algorithm,
                encoding,
                prefix: src
                    .prefix
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_default(),
                timestamp_header: src
                    .timestamp_header
                    .as_ref()
                    .map(|t| t.get_ref().to_ascii_lowercase()),
            })
        }
        other => {
            diag.at(
                provider_span.clone().unwrap_or(0..0),
                format!("unknown webhook provider \"{other}\""),
                Some(format!("write one of {PROVIDERS}")),
            );
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::rate;
    use crate::config::{Config, SourceKind, WebhookSourceConfig, WhenUnavailable};

    fn source(keys: &str) -> WebhookSourceConfig {
        let text = format!(
            "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
             [sources.s]\ntype = \"webhook\"\n{keys}\n"
        );
        let config =
            Config::from_str_with_env(Path::new("t.toml"), &text, |_| None).expect("valid");
        match &config.sources["s"].kind {
            SourceKind::Webhook(w) => w.clone(),
            SourceKind::Postgres(_) => panic!("a webhook source"),
        }
    }

    #[test]
    fn senders_that_do_not_retry_for_long_default_to_dead_letter() {
        for (provider, default) in [
            ("github", WhenUnavailable::DeadLetter),
            ("slack", WhenUnavailable::DeadLetter),
            ("shopify", WhenUnavailable::DeadLetter),
            ("stripe", WhenUnavailable::Reject),
            ("standard", WhenUnavailable::Reject),
        ] {
            let secret = if provider == "standard" {
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            } else {
                "s"
            };
            let keys = format!("provider = \"{provider}\"\nsecrets = [\"{secret}\"]");
            assert_eq!(source(&keys).when_unavailable, default, "{provider}");
            // An explicit setting wins.
            let other = if default == WhenUnavailable::Reject {
                ("dead_letter", WhenUnavailable::DeadLetter)
            } else {
                ("reject", WhenUnavailable::Reject)
            };
            let keys = format!("{keys}\nwhen_unavailable = \"{}\"", other.0);
            assert_eq!(source(&keys).when_unavailable, other.1, "{provider}");
        }
        let none = source("provider = \"none\"\ntoken = \"t\"");
        assert_eq!(none.when_unavailable, WhenUnavailable::Reject);
    }

    #[test]
    fn a_source_may_wait_for_kafka_less_than_the_server_and_slack_does() {
        assert_eq!(
            source("provider = \"slack\"\nsecrets = [\"s\"]").ack_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            source("provider = \"slack\"\nsecrets = [\"s\"]\nack_timeout = \"2500ms\"").ack_timeout,
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            source("provider = \"github\"\nsecrets = [\"s\"]").ack_timeout,
            Some(Duration::from_secs(5)),
            "under GitHub's 10 s"
        );
        assert_eq!(
            source("provider = \"stripe\"\nsecrets = [\"s\"]").ack_timeout,
            None,
            "the server's"
        );
    }

    #[test]
    fn rates_are_requests_per_second() {
        assert_eq!(rate("100/s"), Some(100.0));
        assert_eq!(rate("6000/m"), Some(100.0));
        assert_eq!(rate("0/s"), None);
        assert_eq!(rate("fast"), None);
        // No limit, or a wait no clock can hold: refused, not a panic at the first 429.
        assert_eq!(rate("inf/s"), None);
        assert_eq!(rate("1e-300/h"), None);
        assert_eq!(rate("1/d"), None);
        assert!(rate("0.05/h").is_some_and(|r| r > 1.0 / 86_400.0));
    }
}
