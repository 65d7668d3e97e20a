//! The Archipelago protocol: what peers and tools say to each other over
//! xseg, in one place every peer and tool shares.
//!
//! - [`Op`]: the operation codes, numbered as in the original for the ops
//!   it had, and [`Flags`].
//! - [`payload`]: the fixed layouts carried in a request's data buffer
//!   (copy source, clone and create arguments, lock owners, replies), each
//!   `#[repr(C)]` with its size pinned and encoded field by field.
//! - [`ErrorCode`] and [`Error`]: why a request failed. The original had a
//!   FAILED bit only; every peer here fails a request with one of these
//!   codes and every tool prints it as a sentence.
//! - [`names`]: the grammar of volume and object names, checked by every
//!   peer that receives one, and the derived names (data objects, locks).
//! - [`sizes`]: the rules for volume and object sizes.
//! - [`Role`]: the default static port of each peer, and
//!   [`PROTOCOL_VERSION`], which a segment records in its header.

#![warn(missing_docs)]

mod error;
mod flags;
pub mod names;
mod op;
pub mod payload;
mod role;
pub mod sizes;

pub use error::{Error, ErrorCode};
pub use flags::Flags;
pub use op::{Op, Route, Spec};
pub use role::{Role, CLIENT_PORTS_START};

/// Version of this protocol, written into the header of segments created
/// for Archipelago; peers refuse a segment with another.
///
/// 2: fenced writes ([`Flags::FENCED`], [`payload::FencedTarget`]) and the
/// volume's token in the map reply.
/// 3: fenced copy-ups and deletes (COPY and DELETE with [`Flags::FENCED`]).
/// 4: the error code [`ErrorCode::InUse`] (a snapshot with clones).
pub const PROTOCOL_VERSION: u32 = 4;
