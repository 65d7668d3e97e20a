//! The volume composer peer (`vlmcd`). Clients send every volume
//! operation here; [`Composer`] asks the mapper where a range lives, does
//! the data I/O on the data blocker, and forwards volume management to the
//! mapper once the volume's I/O has drained where the operation needs it
//! (the table is in [`handler`]). [`compose`] holds the pure pieces:
//! classing, planning the pieces of a request, the per-volume gate and
//! the pending commits.
//!
//! The gate only orders what reaches it: the rule that client operations
//! go through vlmcd, its exceptions and why each is safe are in
//! `docs/design.md`, section 8.

#![warn(missing_docs)]

pub mod cli;
pub mod compose;
pub mod handler;

pub use cli::Cli;
pub use handler::{Composer, Ports};
