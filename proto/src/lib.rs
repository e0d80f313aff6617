//! oss-proto: what every oss process shares.
//!
//! - [`admission`]: the cap on connections still logging in, shared by both servers.
//! - [`auth`]: challenge-response logins (keys, verifiers, proofs), SCRAM-style.
//! - [`name`]: object names (`USER/FILENAME`), validation, the 32-bit hash and partitions.
//! - [`ring`]: the ring as pure data and pure functions (placement, rebalance, moves).
//! - [`wire`]: frames, messages and the [`wire::Connection`] every process speaks through.
//! - [`client`]: the async client of the proxy, used by `oss` and `ossfs`.
//! - [`flags`]: parsers of command-line values several binaries take (durations).
//! - [`sync`]: locks that a panic does not poison for everyone after it.

pub mod admission;
pub mod auth;
pub mod client;
pub mod flags;
pub mod name;
pub mod ring;
pub mod sync;
pub mod wire;

pub use name::{NameError, ObjectName};
pub use wire::{Error, ObjectMeta, Timestamp, WireError};
