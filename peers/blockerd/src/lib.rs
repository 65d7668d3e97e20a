//! The blocker peer (`blockerd`): object store operations served over xseg.
//!
//! [`Blocker`] is the [`Handler`](archipelago_peer::Handler) the `blockerd` peer runs. The loop thread
//! only decodes and validates; every store call runs on a pool of worker
//! threads, each holding a detached request (its data buffer is read or
//! filled in place, in the segment, with no copy), and completes through
//! the peer's [`Completer`](archipelago_peer::Completer). Two instances play the original's two roles:
//! data objects (blockerb) and maps and locks (blockerm).
//!
//! | op | target | payload in | reply |
//! |---|---|---|---|
//! | READ | object | — | `size` bytes at `offset`, zeros past the end; missing object: `NotFound` |
//! | WRITE | object | data | `serviced = size`; `FUA` makes it durable first |
//! | WRITE_FULL | object | data | atomic replace |
//! | DELETE | object | — | |
//! | INFO | object | — | [`InfoReply`](archipelago_protocol::payload::InfoReply) |
//! | COPY | destination | [`CopyRequest`](archipelago_protocol::payload::CopyRequest) | `size` bytes from the source's `src_offset` to `offset` |
//! | HASH | object | — | [`NameField`](archipelago_protocol::payload::NameField): content name of `size` bytes at `offset`, stored |
//! | HASH | empty | data (`size` bytes) | [`NameField`](archipelago_protocol::payload::NameField): the data stored by content (`store_content`) |
//! | SYNC, FLUSH | — | — | everything acknowledged is durable |
//! | ACQUIRE | lock name | [`LockOwner`](archipelago_protocol::payload::LockOwner) | [`LockOwner`](archipelago_protocol::payload::LockOwner) with the fencing token; `Locked` with the owner |
//! | RELEASE | lock name | [`LockOwner`](archipelago_protocol::payload::LockOwner) | `FORCE` breaks the lock whoever holds it, replying a [`LockOwner`](archipelago_protocol::payload::LockOwner) naming the previous owner (empty: it was free); `Locked` with the holder |
//! | LOCK_INFO | lock name | — | [`LockOwner`](archipelago_protocol::payload::LockOwner): holder and token; `NotFound` if free |
//! | LIST | prefix | — | names separated by NUL, `serviced` bytes |
//!
//! A store with an asynchronous path ([`ObjectStore::async_io`](archipelago_store::ObjectStore::async_io), RADOS)
//! serves READ and WRITE without the workers: the loop thread starts the
//! operation and the store's callback completes the request, so the
//! number of operations in flight is not bounded by the worker count.
//!
//! Locks never block: ACQUIRE of a lock another owner holds fails at once
//! with `Locked` naming the owner, `NO_WAIT` or not (the original's blocking
//! acquire tied up a worker forever).

//!
//! [`backend`] opens the store a blocker serves from `blockerd`'s options.
#![warn(missing_docs)]

pub mod backend;
pub mod cli;
mod handler;

pub use backend::{Backend, BackendArgs, OpenError};
pub use cli::Cli;
pub use handler::{Blocker, NullBlocker};
