//! One module per group of commands; each function validates its input before it sends
//! anything, and words its own failures through [`crate::error`].

pub mod admin;
pub mod bench;
pub mod objects;
pub mod swift_bench;
pub mod transfer;
pub mod tree;
