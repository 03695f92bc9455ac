//! Doppel's integration tests, one binary: real redb files in temp dirs, real child
//! processes, the real `doppel` binary.

mod brokers;
mod crash_safety;
mod dev_command;
mod examples;
mod kernel;
mod mqtt;
mod node_command;
mod opcua;
mod sparkplug;
mod supervision;
mod support;
