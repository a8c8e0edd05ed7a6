//! `[admin]`: who may use the admin API and the console (`src/admin`), and with which role.
//!
//! ```toml
//! [admin.tokens.alice]
//! role = "operator"
//! sha256 = "${ALICE_TOKEN_SHA256}"   # `switchyard token new` prints a token and this line
//! ```
//!
//! Only digests are configured, never tokens: whoever reads the file (or the environment)
//! cannot act with them. Without tokens the API and the console are off (fail closed).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::diagnostic::Diagnostics;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `[admin.tokens.<name>]`
    #[serde(default)]
    pub tokens: BTreeMap<String, Spanned<RawAdminToken>>,
}

/// `[admin.tokens.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
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
}

impl AdminConfig {
    /// True when the admin API and console are on (at least one token).
    pub fn is_on(&self) -> bool {
        !self.tokens.is_empty()
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

/// Validates `[admin]`; `section` is the span of its header (for errors about the whole).
pub(super) fn validate(raw: RawAdmin, diag: &mut Diagnostics) -> Option<AdminConfig> {
    let mut ok = true;
    let mut tokens: Vec<AdminToken> = Vec::new();
    for (name, t) in raw.tokens {
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
            ok = false;
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
            ok = false;
            continue;
        };
        if let Some(same) = tokens.iter().find(|o| o.sha256 == sha256) {
            diag.at(
                t.sha256.span(),
                format!("tokens `{}` and `{name}` have the same digest", same.name),
                Some("give each person or system a token of its own".into()),
            );
            ok = false;
            continue;
        }
        tokens.push(AdminToken { name, role, sha256 });
    }
    ok.then_some(AdminConfig { tokens })
}
