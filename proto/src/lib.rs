//! oss-proto: what every oss process shares.
//!
//! - [`auth`]: challenge-response logins (keys, verifiers, proofs), SCRAM-style.
//! - [`name`]: object names (`USER/FILENAME`), validation, the 32-bit hash and partitions.
//! - [`ring`]: the ring as pure data and pure functions (placement, rebalance, moves).
//! - [`wire`]: frames, messages and the [`wire::Connection`] every process speaks through.
//! - [`client`]: the async client of the proxy, used by `oss` and `ossfs`.
//! - [`sync`]: locks that a panic does not poison for everyone after it.

pub mod auth;
pub mod client;
pub mod name;
pub mod ring;
pub mod sync;
pub mod wire;

pub use name::{NameError, ObjectName};
pub use wire::{Error, ObjectMeta, Timestamp, WireError};
