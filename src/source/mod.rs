//! Sources: where events come from.

pub mod postgres;
pub mod webhook;
