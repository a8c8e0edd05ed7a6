//! JSON scanning and pointers over raw bytes: a leaf, used by webhook sources (identity, keys)
//! and the CloudEvent encoder; it imports nothing of the crate.

pub mod pointer;
pub mod scan;
