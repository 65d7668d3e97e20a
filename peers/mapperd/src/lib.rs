//! The mapper peer (`mapperd`): a [`Mapper`](archipelago_mapper::Mapper)
//! served over xseg. [`MapperHandler`] decodes each request, runs it on a
//! worker thread and encodes the reply (the op table is in [`handler`]);
//! [`NullMapper`] is the benchmark ceiling of `mapperd --null`.

#![warn(missing_docs)]

pub mod cli;
pub mod handler;
pub mod null;

pub use cli::Cli;
pub use handler::MapperHandler;
pub use null::NullMapper;
