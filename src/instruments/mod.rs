//! What a layer records per method: its configuration, the method filter, each method's
//! resolved handles, and the per-call method lookup with its cardinality guard.

mod config;
mod filter;
mod method;
mod table;

pub(crate) use config::{Config, RecorderRef};
pub(crate) use method::MethodInstruments;
pub use table::DEFAULT_MAX_METHODS;
pub(crate) use table::{MAX_PATH_LEN, MethodTable, split_path};
