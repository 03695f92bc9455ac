//! Doppel's concrete actors and libraries on top of the kernel: the plant → line →
//! machine supervision tree with its aggregates, the standard models and governors,
//! and the embeddable [`Runtime`].

#![forbid(unsafe_code)]

mod error;
pub mod governor;
pub mod model;
pub mod plant;
mod runtime;

pub use error::StartError;
pub use runtime::{Runtime, RuntimeBuilder};
