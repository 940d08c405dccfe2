//! test_app's library side: process helpers shared by the demo and the integration tests.

pub mod procs;
