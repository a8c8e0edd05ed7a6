//! The OpenAPI 3.1 document of the admin API, served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, role: &str, params: Value, body: Option<Value>, answers: Value) -> Value {
    let mut o = json!({
        "summary": summary,
        "description": format!("Role: `{role}` or above. Every call is recorded in the audit trail."),
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": answers,
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

fn answers(ok: &str) -> Value {
    json!({
        "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"},
        "429": {"$ref": "#/components/responses/Error"},
        "503": {"$ref": "#/components/responses/Error"}
    })
}

fn query(name: &str, description: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": kind}})
}

fn path(name: &str, kind: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": kind}})
}

/// The document.
pub(super) fn document() -> Value {
    let selection = json!({
        "type": "object",
        "additionalProperties": false,
        "description": "Which pending entries: at least one of ids, route, class or all; source, since, until and limit narrow it (as `switchyard dlq replay/discard`).",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}},
            "route": {"type": "string"},
            "class": {"type": "string", "enum": crate::store::dead_letters::select::CLASSES},
            "all": {"type": "boolean"},
            "source": {"type": "string"},
            "since": {"type": "string", "description": "a duration ago (1h, 2d) or an RFC 3339 time"},
            "until": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1}
        }
    });
    let mut replay = selection.clone();
    replay["properties"]["dry_run"] = json!({"type": "boolean", "description": "say what would be produced and what would fail; change nothing"});
    replay["properties"]["rate"] =
        json!({"type": ["string", "number"], "description": "entries per second, e.g. \"50/s\""});
    replay["properties"]["force"] =
        json!({"type": "boolean", "description": "also entries already replayed"});
    let mut discard = selection;
    discard["properties"]["reason"] = json!({"type": "string", "minLength": 1});
    discard["required"] = json!(["reason"]);
    let filters = json!([
        query("source", "only this source", "string"),
        query("route", "only this route", "string"),
        query("class", "only this error class", "string"),
        query(
            "status",
            "pending (default), replayed, discarded or all",
            "string"
        ),
        query(
            "since",
            "failed at or after: a duration ago or an RFC 3339 time",
            "string"
        ),
        query("until", "failed before", "string"),
        query(
            "limit",
            "at most this many (default 100, at most 1000)",
            "integer"
        ),
        query(
            "after_id",
            "the next page: the previous answer's next_after_id",
            "integer"
        )
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "switchyard admin API",
            "version": "1",
            "description": "Dead letters, replays, the audit trail, routes and slots of one switchyard instance. Served on [server] admin_listen only; tokens and roles in [admin.tokens]."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a token of [admin.tokens] (`switchyard token new`)"}},
            "responses": {"Error": {"description": "refused or failed", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}, "required": ["error", "message"]
            }}}}}
        },
        "paths": {
            "/api/v1/whoami": {"get": op("The caller's name and role", "viewer", json!([]), None, answers("name and role"))},
            "/api/v1/dead-letters": {"get": op("Dead letters, oldest first, a page at a time", "viewer", filters, None, answers("{items, next_after_id}"))},
            "/api/v1/dead-letters/stats": {"get": op("Counts by route × class × status", "viewer", json!([]), None, answers("rows"))},
            "/api/v1/dead-letters/{id}": {"get": op("One dead letter with its event: masked (the masks of its source's routes) unless raw=true, which needs admin and is audited", "viewer", json!([path("id", "integer"), query("raw", "the payload as stored (admin)", "boolean")]), None, answers("the entry"))},
            "/api/v1/dead-letters/discard": {"post": op("Give up on entries, with a reason", "operator", json!([]), Some(discard), answers("{discarded}"))},
            "/api/v1/replays": {
                "get": op("Replay jobs, newest first", "viewer", json!([]), None, answers("jobs")),
                "post": op("Start a replay job (202): through today's routes, each entry marked replayed after Kafka's acknowledgement; poll it, cancel it", "operator", json!([]), Some(replay), answers("the job"))
            },
            "/api/v1/replays/{id}": {
                "get": op("A replay job: state, counts, its newest output lines", "viewer", json!([path("id", "integer")]), None, answers("the job")),
                "delete": op("Cancel a running replay job (202): no delivery starts after it", "operator", json!([path("id", "integer")]), None, answers("the job"))
            },
            "/api/v1/audit": {"get": op("The audit trail, newest first", "viewer", json!([query("limit", "default 50, at most 1000", "integer")]), None, answers("rows with their hashes"))},
            "/api/v1/audit/verify": {"get": op("Checks the audit trail's hash chain: the first broken link, if any", "viewer", json!([]), None, answers("{verified, unchained, broken, last_hash}"))},
            "/api/v1/routes": {"get": op("Every topic the configuration produces (as `switchyard topics`)", "viewer", json!([]), None, answers("topics"))},
            "/api/v1/lineage": {"get": op("Source → table or event type → route → topic (as `switchyard lineage`)", "viewer", json!([]), None, answers("{nodes, edges}"))},
            "/api/v1/slots": {"get": op("The replication slot of each postgres source", "viewer", json!([]), None, answers("slots"))},
            "/api/v1/slots/{source}/reset": {"post": op("Drop a source's slot (refused while in use)", "admin", json!([path("source", "string")]), None, answers("{dropped, message}"))},
            "/api/v1/reload": {"post": op("Reload routes from the configuration file (as SIGHUP)", "admin", json!([]), None, answers("{reloaded, routes}"))},
            "/api/v1/backfills": {"post": op("Copy a table of a postgres source again while it streams (202; as `switchyard snapshot start`)", "operator", json!([]), Some(json!({
                "type": "object", "additionalProperties": false, "required": ["source", "table"],
                "properties": {
                    "source": {"type": "string"}, "table": {"type": "string", "description": "schema.table"},
                    "where": {"type": "string", "description": "an SQL condition, checked by the database first"},
                    "rate": {"type": ["string", "number"], "description": "rows per second, e.g. \"5000/s\""},
                    "chunk_rows": {"type": "integer", "minimum": 1, "maximum": 100000}
                }
            })), answers("the backfill"))},
            "/api/v1/backfills/{source}": {
                "get": op("The source's backfill: state, rows, chunks, last key", "viewer", json!([path("source", "string")]), None, answers("the backfill")),
                "delete": op("Cancel the source's backfill after the chunk in progress (202)", "operator", json!([path("source", "string")]), None, answers("the backfill"))
            }
        }
    })
}
