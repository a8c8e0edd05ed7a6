//! Switchyard's integration tests: one binary, real components (see `tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod ack_discipline;
mod admin;
mod admin_api;
mod backfill;
mod bad_input;
mod cdc;
mod cdc_envelope;
mod cdc_faults;
mod cdc_order;
mod cdc_shape;
mod cdc_slot;
mod chaos;
mod cli;
mod config_errors;
mod console;
mod dlq_replay;
mod dlq_store;
mod dynamic_topics;
mod ha;
mod harness;
mod ingress;
mod live_lineage;
mod observability;
mod pgoutput_real;
mod publication;
mod redeliver;
mod registry_auth;
mod registry_check;
mod reload;
mod shutdown;
mod snapshot;
mod traces;
mod typed_values;
mod webhook_e2e;
mod webhook_providers;
mod webhook_replay;
