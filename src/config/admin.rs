//! `[admin]`: who may use the admin API and the console (`src/admin`), and with which role.
//!
//! ```toml
//! [admin.tokens.alice]
//! role = "operator"
//! sha256 = "${ALICE_TOKEN_SHA256}"   # `switchyard token new` prints a token and this line
//! ```
//!
//! Only digests are configured, never tokens: whoever reads the file (or the environment)
//! cannot act with them. Without tokens or client certificates the API and the console are off
//! (fail closed).
//!
//! ```toml
//! [admin.tls]                       # HTTPS on the admin listener
//! cert = "tls/admin.pem"
//! key = "tls/admin-key.pem"
//! client_ca = "tls/operators-ca.pem"   # client certificates it signed are verified …
//! [admin.clients.alice]             # … and the one with subject CN "alice" acts as cert:alice
//! common_name = "alice"
//! role = "admin"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::diagnostic::Diagnostics;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// `[admin.tokens.<name>]`
    #[serde(default)]
    pub tokens: BTreeMap<String, Spanned<RawAdminToken>>,
    /// `[admin.tls]`: HTTPS on the admin listener, and the CAs of client certificates.
    pub tls: Option<Spanned<RawAdminTls>>,
    /// `[admin.clients.<name>]`: client certificates (by subject common name) and their role.
    #[serde(default)]
    pub clients: BTreeMap<String, Spanned<RawAdminClient>>,
}

/// `[admin.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdminTls {
    /// The listener's certificate chain (PEM), relative to the configuration file.
    pub cert: Spanned<String>,
    /// Its private key (PEM).
    pub key: Spanned<String>,
    /// CAs (PEM) whose client certificates are verified and mapped by `[admin.clients]`.
    pub client_ca: Option<Spanned<String>>,
}

/// `[admin.clients.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdminClient {
    /// The client certificate's subject common name.
    pub common_name: Spanned<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: Spanned<String>,
}

/// `[admin.tls]`, validated (files read and parsed at load).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTls {
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key, DER (PKCS#8, PKCS#1 or SEC1).
    pub key: crate::config::Secret,
    /// CA certificates of client certificates, DER.
    pub client_cas: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls")
            .field("certificates", &self.chain.len())
            .field("client_cas", &self.client_cas.len())
            .finish_non_exhaustive()
    }
}

impl AdminTls {
    /// The TLS server configuration: this chain and key; client certificates signed by the
    /// client CAs verified when presented (a client without one may still use a token, and
    /// probes need none).
    pub(crate) fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = PrivateKeyDer::try_from(self.key.0.clone())
            .map_err(|e| format!("the private key: {e}"))?;
        let builder = rustls::ServerConfig::builder_with_provider(std::sync::Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.client_cas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for ca in &self.client_cas {
                roots
                    .add(CertificateDer::from(ca.clone()))
                    .map_err(|e| format!("a client CA certificate: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("the client CAs: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("the certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(config))
    }
}

/// A client certificate's principal: `cert:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClient {
    /// `[admin.clients.<name>]`
    pub name: String,
    /// The subject common name it is recognised by.
    pub common_name: String,
    /// Its role.
    pub role: Role,
}

/// `[admin.tokens.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdminToken {
    /// `viewer`, `operator` or `admin`.
    pub role: Spanned<String>,
    /// The token's SHA-256, hex (64 characters), optionally prefixed `sha256:`.
    pub sha256: Spanned<String>,
}

/// What an admin principal may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read: dead letters (payloads masked), stats, audit, routes, slots.
    Viewer,
    /// + replay and discard.
    Operator,
    /// + raw payloads, slot reset, reload.
    Admin,
}

impl Role {
    /// The role's name in the config and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// One configured token: its name (the principal `token:<name>`), role and digest.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// `[admin.tokens.<name>]`
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The tokens, by name.
    pub tokens: Vec<AdminToken>,
    /// HTTPS on the admin listener.
    pub tls: Option<AdminTls>,
    /// Client certificates, by name.
    pub clients: Vec<AdminClient>,
}

impl AdminConfig {
    /// True when the admin API and console are on (a token or a client certificate).
    pub(crate) fn is_on(&self) -> bool {
        !self.tokens.is_empty() || !self.clients.is_empty()
    }
}

/// The PEM blocks labelled `label`s in `text`, DER.
fn pem_blocks(text: &str, labels: &[&str]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let body: String = lines
            .by_ref()
            .take_while(|l| !l.trim().starts_with("-----END "))
            .map(str::trim)
            .collect();
        if labels.contains(&label)
            && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body)
        {
            out.push(der);
        }
    }
    out
}

fn read_pem(
    path: &Spanned<String>,
    base: &std::path::Path,
    labels: &[&str],
    what: &str,
    diag: &mut Diagnostics,
) -> Option<Vec<Vec<u8>>> {
    let file = base.join(path.get_ref());
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let blocks = pem_blocks(&text, labels);
            if blocks.is_empty() {
                diag.at(
                    path.span(),
                    format!(
                        "{} holds no {what} (PEM: {})",
                        file.display(),
                        labels.join(" or ")
                    ),
                    Some("give a PEM file, e.g. what `openssl req -x509 … -out` writes".into()),
                );
                return None;
            }
            Some(blocks)
        }
        Err(e) => {
            diag.at(
                path.span(),
                format!("cannot read {}: {e}", file.display()),
                Some("paths are relative to the configuration file".into()),
            );
            None
        }
    }
}

/// Names principals use: letters, digits, `-`, `_`, `.`, `@`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Validates `[admin]` (files relative to `base`, the configuration's directory).
pub(super) fn validate(
    raw: RawAdmin,
    base: &std::path::Path,
    diag: &mut Diagnostics,
) -> Option<AdminConfig> {
    let mut ok = true;
    let tls = raw.tls.and_then(|t| tls(t, base, &mut ok, diag));
    let clients = clients(raw.clients, tls.as_ref(), &mut ok, diag);
    let tokens = tokens(raw.tokens, &mut ok, diag);
    ok.then_some(AdminConfig {
        tokens,
        tls,
        clients,
    })
}

/// `[admin.tls]`: its files read and parsed, and checked to fit together (a key of another
/// certificate is reported here, not at the first connection).
fn tls(
    t: Spanned<RawAdminTls>,
    base: &std::path::Path,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Option<AdminTls> {
    let t = t.into_inner();
    let chain = read_pem(&t.cert, base, &["CERTIFICATE"], "certificate", diag);
    let key = read_pem(
        &t.key,
        base,
        &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        "private key",
        diag,
    );
    let cas = match &t.client_ca {
        None => Some(Vec::new()),
        Some(p) => read_pem(p, base, &["CERTIFICATE"], "CA certificate", diag),
    };
    match (chain, key, cas) {
        (Some(chain), Some(mut key), Some(client_cas)) => {
            let tls = AdminTls {
                chain,
                key: crate::config::Secret(key.swap_remove(0)),
                client_cas,
            };
            // The pieces must fit together (a key of another certificate, …).
            match tls.server_config() {
                Ok(_) => Some(tls),
                Err(e) => {
                    diag.at(
                        t.cert.span(),
                        format!("[admin.tls] cannot be used: {e}"),
                        Some("give the certificate chain (leaf first), its own private key, and CA certificates as PEM".into()),
                    );
                    *ok = false;
                    None
                }
            }
        }
        _ => {
            *ok = false;
            None
        }
    }
}

/// `[admin.clients]`: each client certificate's common name and role. Clients need
/// `[admin.tls]` with `client_ca`, which verifies their certificates.
fn clients(
    raw: BTreeMap<String, Spanned<RawAdminClient>>,
    tls: Option<&AdminTls>,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Vec<AdminClient> {
    let mut clients: Vec<AdminClient> = Vec::new();
    for (name, c) in raw {
        let span = c.span();
        let c = c.into_inner();
        if !valid_name(&name) {
            diag.at(
                span.clone(),
                format!("`{name}` is not a usable client name"),
                Some("use letters, digits, -, _, . and @ (at most 64)".into()),
            );
            *ok = false;
        }
        if tls.is_none_or(|t| t.client_cas.is_empty()) {
            diag.at(
                span,
                format!("[admin.clients.{name}] needs client certificates verified: [admin.tls] with client_ca"),
                Some("add [admin.tls] cert, key and client_ca (the CA that signs your operators' certificates)".into()),
            );
            *ok = false;
            continue;
        }
        let Some(role) = Role::parse(c.role.get_ref()) else {
            diag.at(
                c.role.span(),
                format!("unknown role \"{}\"", c.role.get_ref()),
                Some("write role = \"viewer\", \"operator\" or \"admin\"".into()),
            );
            *ok = false;
            continue;
        };
        let cn = c.common_name.get_ref().trim().to_string();
        if cn.is_empty() || clients.iter().any(|o| o.common_name == cn) {
            diag.at(
                c.common_name.span(),
                format!("client `{name}`: common_name is empty or another client's"),
                Some("each client certificate's subject CN names one client".into()),
            );
            *ok = false;
            continue;
        }
        clients.push(AdminClient {
            name,
            common_name: cn,
            role,
        });
    }
    clients
}

/// `[admin.tokens]`: each token's role and SHA-256 (the token itself is never written down);
/// two tokens with one digest are refused.
fn tokens(
    raw: BTreeMap<String, Spanned<RawAdminToken>>,
    ok: &mut bool,
    diag: &mut Diagnostics,
) -> Vec<AdminToken> {
    let mut tokens: Vec<AdminToken> = Vec::new();
    for (name, t) in raw {
        let span: Range<usize> = t.span();
        let t = t.into_inner();
        if !valid_name(&name) {
            diag.at(
                span.clone(),
                format!("`{name}` is not a usable token name"),
                Some(
                    "use letters, digits, -, _, . and @ (at most 64), e.g. [admin.tokens.alice]"
                        .into(),
                ),
            );
            *ok = false;
        }
        let role = match Role::parse(t.role.get_ref()) {
            Some(r) => Some(r),
            None => {
                diag.at(
                    t.role.span(),
                    format!("unknown role \"{}\"", t.role.get_ref()),
                    Some("write role = \"viewer\", \"operator\" or \"admin\"".into()),
                );
                None
            }
        };
        let text = t.sha256.get_ref().trim();
        let text = text.strip_prefix("sha256:").unwrap_or(text);
        let digest = hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if digest.is_none() {
            diag.at(
                t.sha256.span(),
                format!("token `{name}`: sha256 is not 64 hexadecimal digits"),
                Some(
                    "write the token's SHA-256, never the token itself: `switchyard token new --name NAME --role ROLE` makes a token and prints this line; `switchyard token hash` hashes one read from standard input"
                        .into(),
                ),
            );
        }
        let (Some(role), Some(sha256)) = (role, digest) else {
            *ok = false;
            continue;
        };
        if let Some(same) = tokens.iter().find(|o| o.sha256 == sha256) {
            diag.at(
                t.sha256.span(),
                format!("tokens `{}` and `{name}` have the same digest", same.name),
                Some("give each person or system a token of its own".into()),
            );
            *ok = false;
            continue;
        }
        tokens.push(AdminToken { name, role, sha256 });
    }
    tokens
}
