//! Helpers of the command's integration tests: the shared test support.
#![allow(dead_code)]

pub use eventplug_test_support::*;
