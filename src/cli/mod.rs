//! Subcommands of the `doppel` binary.

pub mod alarm;
pub mod cluster;
pub mod dev;
pub mod dev_cluster;
pub mod model;
pub mod node;
pub mod opcua;
pub mod opcua_browse;
pub mod status;
pub mod twin;
pub mod types;
