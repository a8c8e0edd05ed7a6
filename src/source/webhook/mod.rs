//! The webhook source: HTTP POSTs to a source's path become events.
//!
//! Invariant: a request is answered 200 only after its event is durable (every matched route
//! acknowledged by Kafka). If that does not happen within `[server].ack_timeout` the answer is
//! 503 with `Retry-After`, and the event's retries stop: the sender delivers it again. Every
//! error answer is a precise status code with a JSON body `{"error": …, "message": …}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::debug;

use crate::ack::{AckToken, Delivery};
use crate::config::WebhookSourceConfig;
use crate::error::ErrorClass;
use crate::event::{Event, EventId, Payload, WebhookPayload, now_micros};
use crate::pipeline::Pipeline;

/// Headers never copied into the stored event: they carry credentials of the sender.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// One webhook source's request handler state.
#[derive(Clone)]
pub struct WebhookSource {
    name: Arc<str>,
    config: WebhookSourceConfig,
    pipeline: Arc<Pipeline>,
    ack_timeout: Duration,
}

impl WebhookSource {
    /// A handler for the source `name`.
    pub fn new(
        name: &str,
        config: WebhookSourceConfig,
        pipeline: Arc<Pipeline>,
        ack_timeout: Duration,
    ) -> WebhookSource {
        WebhookSource {
            name: Arc::from(name),
            config,
            pipeline,
            ack_timeout,
        }
    }

    /// The path it listens on.
    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// Handles one POST.
    pub async fn receive(
        &self,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let body = match body {
            Ok(b) => b,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than [server].max_body_size".into(),
                );
            }
            Err(rejection) => {
                return error(StatusCode::BAD_REQUEST, "bad_body", rejection.body_text());
            }
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body must be JSON: {e}"),
            );
        }
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is not UTF-8".into(),
            );
        };
        let event = self.event(&headers, text, &body);
        let id = event.id.clone();
        let (ack, done) = AckToken::new();
        let pipeline = Arc::clone(&self.pipeline);
        let outcome = tokio::time::timeout(self.ack_timeout, async move {
            pipeline.dispatch(event, ack).await;
            done.wait().await
        })
        .await;
        match outcome {
            Ok(Delivery::Delivered) => {
                debug!(source = %self.name, event_id = %id, "webhook accepted");
                let body = json!({"status": "accepted", "id": id.as_str()});
                (StatusCode::OK, Json(body)).into_response()
            }
            Ok(Delivery::DeadLettered) => {
                let body = json!({"status": "dead_lettered", "id": id.as_str()});
                (StatusCode::OK, Json(body)).into_response()
            }
            Ok(Delivery::Failed(f)) if f.class.is_transient() => unavailable(&f.message),
            Ok(Delivery::Failed(f)) => {
                let status = match f.class {
                    ErrorClass::Unroutable | ErrorClass::Encode | ErrorClass::Oversize => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                error(status, f.class.as_str(), f.message)
            }
            Err(_) => unavailable(&format!(
                "Kafka did not acknowledge the event within {:?}; retry later (a retry keeps the event id, so a consumer can recognise a duplicate)",
                self.ack_timeout
            )),
        }
    }

    fn event(&self, headers: &HeaderMap, body: String, raw: &[u8]) -> Event {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let id = match header("webhook-id") {
            Some(id) if !id.is_empty() => EventId::from_provider(id),
            _ => EventId::from_content(raw),
        };
        let event_type = header("ce-type")
            .or_else(|| header("x-event-type"))
            .filter(|t| !t.is_empty())
            .unwrap_or("webhook")
            .to_string();
        let kept = headers
            .iter()
            .filter(|(k, _)| !SECRET_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect();
        Event {
            id,
            source: self.name.to_string(),
            event_type,
            received_at_micros: now_micros(),
            payload: Payload::Webhook(WebhookPayload {
                path: self.config.path.clone(),
                content_type: header("content-type").map(str::to_string),
                headers: kept,
                body,
            }),
        }
    }
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

fn unavailable(message: &str) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        message.to_string(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
