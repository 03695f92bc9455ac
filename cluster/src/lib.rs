//! Doppel's cluster: edge and cloud nodes over gRPC.
//!
//! This crate owns what makes several nodes one system: the `[cluster]` config
//! ([`ClusterConfig`]), membership over chitchat gossip with phi-accrual failure
//! detection ([`membership`]), placement of twins on the edge node that owns their plant
//! or line and of fleet planners on a cloud node chosen by rendezvous hashing
//! ([`placement`]), node-to-node transport with the cluster id and mutual TLS
//! ([`transport`]), gossip sealed with the cluster's key ([`seal`]), forwarding of public API calls to the owner ([`service`],
//! [`router`]), edge→cloud replication through a durable outbox with store-and-forward
//! ([`replication`]) into compact read-only mirrors ([`mirror`]), model deployments
//! sent from any node to the edge nodes that host the twins, and the fleet planners
//! ([`planner`]).

#![forbid(unsafe_code)]

pub mod clock;
mod cluster;
pub mod config;
mod error;
pub mod fleet;
pub mod membership;
pub mod mirror;
mod models;
pub mod placement;
pub mod planner;
pub mod replication;
pub mod router;
pub mod seal;
pub mod service;
mod status;
pub mod transport;

pub use cluster::Cluster;
pub use config::{ClusterConfig, NodeRole};
pub use error::ClusterError;
