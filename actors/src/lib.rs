//! Doppel's concrete actors and libraries on top of the kernel.

#![forbid(unsafe_code)]

pub mod governor;
pub mod model;
