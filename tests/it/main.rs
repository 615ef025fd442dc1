//! flagpost's integration tests: the real server, in-process on port 0 (and the real binary for
//! the command line), driven over HTTP.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod backstage;
mod browser;
mod cli;
mod deploy;
mod edge;
mod edge_compat;
mod edge_settings;
mod edge_tokens;
mod failure;
mod fleet;
mod fleet_access;
mod fleet_fencing;
mod fleet_ha;
mod fleet_scope;
mod frontend;
mod hardening;
mod harness;
mod layers;
mod logs;
mod offline;
mod otel_config;
mod otlp;
mod protocol;
mod redis;
mod s3;
mod sdk;
mod shutdown;
mod spec;
mod streaming;
mod streaming_edge;
mod telemetry;
mod tls;
mod traces;
mod traces_failing;
mod upstream;
mod usage;
mod usage_intake;
