//! Sources: where events come from.

pub mod health;
pub mod postgres;
pub mod webhook;
