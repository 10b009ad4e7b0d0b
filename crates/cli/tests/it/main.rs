//! End-to-end tests of the `healthgate` binary: each test runs the real
//! executable as a subprocess in its own temporary working directory, so the
//! default SQLite database lands there, and talks to it over HTTP on
//! 127.0.0.1.

mod admin;
mod backup;
mod config;
mod demo;
mod errors;
mod flow;
mod metrics;
mod nodes;
mod openapi;
mod ops;
mod profiles;
mod serve;
mod support;
