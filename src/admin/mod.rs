//! The operator surface on the admin listener: the admin API under `/api/v1` (JSON, described
//! by `/api/v1/openapi.json`) and the console under `/ui`, for the tokens of `[admin]`.
//!
//! ```text
//!  request ──► request id ──► token → principal (401 / 429) ──► role ≥ needed? (403)
//!        ──► the same code as `switchyard dlq …` (crate::store) ──► audit row (chained) ──► answer
//! ```
//!
//! Invariants (tests: `tests/it/admin_api.rs`):
//! - every call but the OpenAPI document needs a token; each attempt, refused or not, is in
//!   the audit trail with the principal (`anonymous` when there is none), role, peer address
//!   and request id — except failures beyond the address's budget (429, counted nowhere but
//!   the answer, so a token guesser cannot fill the store);
//! - viewers see payloads with the masks of their source's routes applied; the raw payload is
//!   for `admin` only, and each view of it is audited;
//! - replay and discard mean what they mean in the CLI: the same selection
//!   ([`crate::store::dead_letters::select::Selection`]) and the same replay ([`crate::replay::replay`]).

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod jobs;
mod openapi;
pub(crate) mod ui;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::config::admin::Role;
use crate::event::now_micros;
use crate::pipeline::Pipeline;
use crate::source::webhook::error;
use crate::store::{AuditEntry, Store};
use auth::{Failures, Principal, Tokens};

/// What the admin API and console work with.
pub(crate) struct AdminState {
    /// The configuration in force (routes, lineage, slots); replaced by a reload through the API.
    pub config: RwLock<Arc<Config>>,
    tokens: Tokens,
    /// Client certificates' principals (`[admin.clients]`).
    clients: Vec<crate::config::admin::AdminClient>,
    failures: Failures,
    /// The dead-letter store.
    pub store: Arc<Store>,
    /// The daemon's pipeline (replays go through it).
    pub pipeline: Arc<Pipeline>,
    /// Replay jobs.
    pub jobs: jobs::Jobs,
    /// Where a reload sends postgres sources their tables.
    pub selections: crate::source::postgres::publication::Selections,
    /// The daemon's runtime: jobs run there, not on the admin listener's thread.
    pub runtime: tokio::runtime::Handle,
    /// The console's last look at the records produced: when, the total, the rate then.
    rate: std::sync::Mutex<Option<(std::time::Instant, f64, Option<f64>)>>,
}

impl AdminState {
    /// For `config` (its `[admin]` tokens), on the current runtime.
    pub(crate) fn new(
        config: &Config,
        store: Arc<Store>,
        pipeline: Arc<Pipeline>,
        selections: crate::source::postgres::publication::Selections,
    ) -> AdminState {
        AdminState {
            config: RwLock::new(Arc::new(config.clone())),
            tokens: Tokens::new(config.admin.tokens.clone()),
            clients: config.admin.clients.clone(),
            failures: Failures::default(),
            store,
            pipeline,
            jobs: jobs::Jobs::default(),
            selections,
            runtime: tokio::runtime::Handle::current(),
            rate: std::sync::Mutex::new(None),
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }
}

/// `/api/v1/…` and `/ui/…`, with request ids.
pub(crate) fn routes(state: Arc<AdminState>) -> Router {
    api::routes(Arc::clone(&state))
        .merge(ui::routes(state))
        .layer(axum::middleware::from_fn(request_id))
}

/// A request's id: in its audit rows and in the `x-request-id` header of its answer.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

fn next_request_id() -> String {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = *STARTED.get_or_init(now_micros);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        started,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = next_request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// One call to the API or console: who may be calling, from where, and what.
pub(crate) struct Call {
    token: Option<String>,
    /// The subject CN of the verified client certificate of the connection, if any.
    client: Option<Arc<str>>,
    peer: String,
    request_id: String,
    /// `METHOD /path?query`, for the audit log.
    pub what: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Call, Self::Rejection> {
        Ok(Call {
            token: auth::presented(&parts.headers),
            client: parts
                .extensions
                .get::<crate::serve::ClientCertificate>()
                .map(|c| Arc::clone(&c.0)),
            peer: parts
                .extensions
                .get::<crate::serve::Peer>()
                .map(|p| p.0.to_string())
                .unwrap_or_default(),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            what: format!(
                "{} {}",
                parts.method,
                parts
                    .uri
                    .path_and_query()
                    .map_or(parts.uri.path(), |p| p.as_str())
            ),
        })
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token, or not one of ours (401).
    Unauthenticated,
    /// Too many failures from this address (429).
    TooManyFailures,
    /// The role is too small (403).
    Forbidden(Role),
}

impl Refusal {
    /// The JSON answer of the API.
    pub(crate) fn response(self) -> Response {
        match self {
            Refusal::Unauthenticated => error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a token of [admin.tokens] as `Authorization: Bearer <token>`".into(),
            ),
            Refusal::TooManyFailures => {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    format!(
                        "more than {} failed authentications from this address in a minute; wait",
                        auth::FAILURES_PER_MINUTE
                    ),
                );
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("60"));
                r
            }
            Refusal::Forbidden(needed) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the `{}` role", needed.as_str()),
            ),
        }
    }
}

impl Call {
    /// The caller, if it may act with `needed`; a refusal is audited (within the address's
    /// failure budget).
    pub(crate) async fn require(
        &self,
        state: &AdminState,
        needed: Role,
    ) -> Result<Principal, Refusal> {
        let peer = self
            .peer
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        if state.failures.exhausted(peer) {
            return Err(Refusal::TooManyFailures);
        }
        // A verified client certificate of a configured client first, else a token.
        let principal = self
            .client
            .as_deref()
            .and_then(|cn| state.clients.iter().find(|c| c.common_name == cn))
            .map(|c| Principal {
                name: format!("cert:{}", c.name),
                role: c.role,
            })
            .or_else(|| {
                self.token
                    .as_deref()
                    .and_then(|t| state.tokens.authenticate(t))
            });
        let Some(principal) = principal else {
            let peer = self
                .peer
                .parse()
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            if !state.failures.charge(peer) {
                return Err(Refusal::TooManyFailures);
            }
            self.audit_as(state, "anonymous", "", "denied", 0, "401 unauthenticated")
                .await;
            return Err(Refusal::Unauthenticated);
        };
        if principal.role < needed {
            self.audit_as(
                state,
                &principal.name,
                principal.role.as_str(),
                "denied",
                0,
                &format!("403 needs {}", needed.as_str()),
            )
            .await;
            return Err(Refusal::Forbidden(needed));
        }
        Ok(principal)
    }

    /// Records what `who` did in this call; `Err` (a 503 to answer) if the audit log cannot be
    /// written: callers record an action before they take it, and take none unrecorded.
    pub(crate) async fn audit(
        &self,
        state: &AdminState,
        who: &Principal,
        action: &str,
        count: i64,
        result: &str,
    ) -> Result<(), Response> {
        if self
            .audit_as(state, &who.name, who.role.as_str(), action, count, result)
            .await
        {
            Ok(())
        } else {
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log cannot be written (the DLQ store is unavailable); nothing was done"
                    .into(),
            ))
        }
    }

    async fn audit_as(
        &self,
        state: &AdminState,
        actor: &str,
        role: &str,
        action: &str,
        count: i64,
        result: &str,
    ) -> bool {
        let entry = AuditEntry {
            at: now_micros(),
            actor: actor.to_string(),
            role: role.to_string(),
            action: action.to_string(),
            selector: self.what.clone(),
            count,
            result: result.to_string(),
            peer: self.peer.clone(),
            request_id: self.request_id.clone(),
        };
        match state.store.audit_trail().append(&entry).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, actor, action, "could not write the audit log");
                false
            }
        }
    }
}
