//! Subcommands of the `doppel` binary.

pub mod dev;
pub mod node;
pub mod twin;
