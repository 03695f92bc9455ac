//! The OPC UA connector (async-opcua client): one per server endpoint. Mapped variables
//! are monitored into twin channels; accepted commands and safety actions become
//! variable writes and method calls.
//!
//! # Data in
//!
//! Every mapped variable is a monitored item of one subscription, with the configured
//! sampling interval and, when configured, an absolute deadband (a `DataChangeFilter`
//! on status and value). The data changes of a publish response (and of any that queued
//! up behind it) are ingested in one batch.
//!
//! - **Value**: every integer type, Float and Double become `f64`; a Boolean becomes
//!   0 or 1. A data change with a Bad status and no value (as Part 4 §7.7.1 has a
//!   server report `BadSensorFailure` or `BadNoCommunication`) marks the channel bad
//!   with the status's name until a reading measured after it arrives. Anything else
//!   (strings, structures, arrays, no value with any other status) is dropped as
//!   [`DropKind::WrongType`](crate::DropKind::WrongType) and the twin is not touched.
//! - **Session**: when the session is lost, every channel whose current value came
//!   from this connector goes stale at once, until its next reading.
//! - **Quality**: from the two severity bits of the status code: `00` Good, `01`
//!   Uncertain, `10` Bad (the reserved `11` also Bad). A data change without a status
//!   is Good. A bad value is still delivered, marked Bad.
//! - **Time**: the source timestamp; the server timestamp when the source sent none;
//!   the receive time when neither came.
//! - **Sequence number**: the chosen timestamp in microseconds since the Unix epoch.
//!   A reading is known by it, so a value delivered again with the same source
//!   timestamp — the initial value of a subscription re-created after a reconnect,
//!   say — is applied once. A value whose timestamp is older than the channel's
//!   current one goes into history only: a server that changes a value without
//!   changing its source timestamp, or whose clock went back, is not followed until
//!   its timestamps move on.
//! - Values the kernel refuses (NaN, out of range, timestamps too far off) are counted
//!   under the matching [`DropKind`](crate::DropKind), like every other drop, and logged
//!   once per kind per minute.
//!
//! # Commands out
//!
//! For an actuation of a mapped asset, each changed desired value with a `writes` entry
//! becomes one write (all in one request), converted to the variable's DataType as read
//! when the session opened (Boolean, the integer types, Float, Double; a float is
//! rounded for an integer variable; a value outside the type's range is refused). A
//! command with a `methods` entry then becomes a call whose arguments are, in the
//! configured order, the governed values of the desired values the named parameters
//! set: a command clamped from 2800 to 2400 rpm calls `Ramp(2400.0)`. A parameter that
//! sets no desired value is reviewed by no governor and is refused as an argument at
//! start ([`OpcUaError::UngovernedParam`]). An actuation that finds no session is not
//! delivered later — a late setpoint can be worse than none — it is logged and counted
//! as failed, like a write or call the server refuses. Failures never stop the
//! connector; a failed safety action is logged as an error.
//!
//! # Reconnecting
//!
//! When the connection drops, a keep-alive read fails three times in a row, or the
//! subscription dies, the session is closed and a new one is opened from scratch:
//! endpoints are asked for again, the written variables' types read again, the
//! subscription and its monitored items created again. Attempts back off from
//! `reconnect.initial_ms`, doubling up to `reconnect.max_ms`, and start over once a
//! session is established. Nothing else restarts: a server replaced by a new process on
//! the same endpoint is picked up by the same connector.
//!
//! # Security defaults
//!
//! - Policy `Basic256Sha256`, mode `SignAndEncrypt`. An endpoint whose policy or mode
//!   is `None` is refused at start with [`OpcUaError::InsecureEndpoint`] unless
//!   `allow_insecure = true`.
//! - The connector's own certificate and key are created in its PKI directory on first
//!   start and kept; give its `own/cert.der` to the server's trust list.
//! - The server's certificate must be in the PKI directory's `trusted/` folder; an
//!   unknown one is put in `rejected/` and the connection refused (logged with the
//!   file's path), unless `trust_server_certificate = true`. To trust it, move the file
//!   from `rejected/` to `trusted/` keeping its name: the certificate is looked up as
//!   `<common name> [<SHA-1 thumbprint>].der`, or `<thumbprint>.der` without a common
//!   name, and a copy left in `rejected/` still refuses it. `doppel opcua trust --config
//!   FILE` does this in one step ([`server_certificate`], then [`trust`]): it shows the
//!   certificate the server presents (common name, thumbprint, validity, the security it
//!   offers) and files it. Host name, application URI and validity dates of the
//!   server's certificate are always checked.
//! - A server that offers no endpoint with the configured policy and mode is reported
//!   with the policies and modes it does offer.
//! - The connector's private key is written 0600 in a 0700 `private/` directory.
//!
//! # Browsing
//!
//! `doppel opcua browse` ([`browse`]) opens a session as the connector does (same
//! security, PKI and trust rules), walks the address space and proposes a twin type and
//! `[[opcua.asset]]` mapping ([`Proposal`]): numeric and Boolean variables as channels
//! with the units and ranges of their EngineeringUnits and EURange, writable ones as
//! desired values with `set_<name>` commands, methods with numeric arguments as
//! commands; every other node found is listed with the reason it was left out.
//!
//! ```
//! use doppel_connectors::opcua::{OpcUaConfig, OpcUaError};
//!
//! let configs = OpcUaConfig::from_toml(r#"
//!     [[opcua]]
//!     name = "press-line"
//!     endpoint = "opc.tcp://127.0.0.1:4840/"
//!     security_policy = "None"
//!     security_mode = "None"
//! "#).unwrap();
//! assert!(matches!(configs[0].validate(), Err(OpcUaError::InsecureEndpoint { .. })));
//! ```

mod browse;
mod config;
pub(crate) mod connector;
mod convert;
mod error;
pub(crate) mod plan;
mod proposal;
mod trust;

pub use browse::{BrowseOptions, browse};
pub use proposal::{
    Cut, Proposal, ProposedCall, ProposedChannel, ProposedCommand, ProposedDesired, ProposedParam,
    RangeSource, SkipReason, Skipped,
};

pub use config::{
    AssetMapping, ChannelMapping, MethodArg, MethodMapping, OpcUaConfig, Password, ReconnectConfig,
    ScalarType, SecurityMode, SecurityPolicy, WriteMapping,
};
pub use connector::{ActuationCounts, ConnectionState, OpcUaConnector, OpcUaHandle};
pub use convert::{
    Decoded, OutOfRange, Undecodable, decode, number_of, quality_of, seq_of, timestamp_of,
};
pub use error::OpcUaError;
pub use trust::{ServerCertificate, Trusted, server_certificate, trust};
