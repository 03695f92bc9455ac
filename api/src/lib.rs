//! Doppel's public gRPC service: `doppel.v1.TwinService` over a node's twins.
//!
//! This crate owns the API a node serves: [`TwinApi`] answers the seven RPCs of
//! `doppel/v1/twin.proto` over a [`Twins`](doppel_runtime::twin::Twins) handle, and
//! `doppel.v1.StatusService` (`doppel/v1/status.proto`): what the node's connectors
//! received and what became of it;
//! [`Authenticator`] admits callers by bearer token and role; [`ApiServer`] serves both
//! with gRPC health checking and server reflection, over TLS when a certificate is
//! configured. Every RPC runs in a `tracing` span carrying the method, asset path and
//! command id.
//!
//! A node from a config file serves it from its `[api]` table; a program embedding the
//! runtime serves it with [`ApiServer::start`]:
//!
//! ```no_run
//! # async fn serve(runtime: doppel_actors::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! use doppel_api::{ApiConfig, ApiServer, Role};
//!
//! let config: ApiConfig = toml::from_str(r#"
//!     listen = "127.0.0.1:50051"
//!     tokens = [{ name = "ann", token = "a-long-random-secret-token", role = "operator" }]
//! "#)?;
//! let api = ApiServer::start(config, runtime.twins().clone()).await?;
//! println!("TwinService on {}", api.url());
//! api.stop().await;
//! # Ok(()) }
//! ```
//!
//! With an `[api.http]` table the node also serves the same calls as a REST/JSON API
//! under `/api/v1/` (server-sent events for watches, RFC 9457 problems for errors, an
//! OpenAPI document generated from the protos at `/api/v1/openapi.json`) and the
//! operator console at `/`, behind the same tokens.
//!
//! Roles: a viewer reads, watches and simulates; an operator also sends commands; a
//! planner sends commands recorded as planner-originated; an admin may do everything.

#![forbid(unsafe_code)]

mod alarms;
mod auth;
mod config;
pub mod convert;
mod error;
mod http;
mod models;
pub mod page;
mod server;
mod service;
mod status;
mod watcher;

pub use alarms::{ALARM_SERVICE_NAME, MAX_SHELVING, list_response as alarm_list_response};
pub use auth::{Authenticator, Caller, DEV_TOKEN_FILE, load_or_create_dev_token};
pub use config::{
    ApiConfig, ApiLimits, MAX_TOKEN_LEN, MIN_TOKEN_LEN, Role, TlsConfig, TokenConfig,
};
pub use error::ApiError;
pub use http::HttpConfig;
pub use models::{MAX_PACKAGE_BYTES, MODEL_SERVICE_NAME, deploy_target};
pub use server::{ApiHandle, ApiServer, BoundApi, SERVICE_NAME};
pub use service::{
    MAX_IDEMPOTENCY_KEY_CHARS, MAX_PARAMS, MAX_STRING_BYTES, TwinApi, audit_kinds, grpc_timeout,
    kinds_key, page_size, parse_path, parse_prefix, time_range,
};
pub use status::{ClusterView, STATUS_SERVICE_NAME};

/// The standard health checking service (`grpc.health.v1`), for clients.
pub use tonic_health as health;
/// Server reflection (`grpc.reflection.v1`), for clients.
pub use tonic_reflection as reflection;
