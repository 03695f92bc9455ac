//! Fixtures Doppel's tests and benchmarks share, each in one place: the integration
//! tests (tests/it), the crates' unit tests and the benches all use this crate.
//!
//! It depends on no Doppel crate, so every crate can take it as a dev-dependency
//! without a cycle: it speaks in TOML text, paths as strings and microseconds since
//! the epoch, which each test wraps in its own crate's types.
//!
//! ```
//! use std::time::Duration;
//!
//! // A reading stamped a minute ago, whatever day the test runs.
//! let source_time = doppel_testkit::clock::micros_ago(Duration::from_secs(60));
//! assert!(source_time < doppel_testkit::clock::now_micros());
//! ```

pub mod clock;
pub mod http;
pub mod mosquitto;
pub mod net;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod tls;
pub mod twin_types;
pub mod wait;
pub mod webdriver;

pub use wait::{eventually, wait_until};
