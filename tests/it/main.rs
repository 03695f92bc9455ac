//! Doppel's integration tests, one binary: real redb files in temp dirs, real child
//! processes, the real `doppel` binary.

mod alarms;
mod annotations;
mod api;
mod api_transport;
mod brokers;
mod cli_twin;
mod cluster;
mod console;
mod crash_safety;
mod dev_command;
mod dtdl;
mod examples;
mod http;
mod input;
mod kernel;
mod model_cluster;
mod model_package;
mod model_rollout;
mod mqtt;
mod mqtt_tls;
mod node_command;
mod opcua;
mod opcua_browse;
mod otel;
mod outbox;
mod passivation;
mod recommend;
mod sandbox;
mod sparkplug;
mod starting;
mod supervision;
mod support;
