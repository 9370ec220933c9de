//! The shared runtime of every Bowtie service, written once: layered
//! configuration, telemetry, the database connection and migrations, the error
//! type and its mapping to gRPC statuses, API-key auth, idempotency keys, the
//! outbox-backed change feed, TLS, the server bootstrap, and what every
//! service's handlers, feed consumers and `build()` have in common.
//!
//! A service crate contributes its domain, its tables and its handlers; how it
//! is configured, secured, observed, stored and served comes from here.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod cache;
pub mod config;
mod contracts;
pub mod db;
pub mod error;
pub mod export;
pub mod feed;
pub mod idempotency;
pub mod import;
pub mod limits;
pub mod oidc;
pub mod paging;
pub mod peer;
pub mod pg;
pub mod retention;
pub mod schema;
pub mod server;
pub mod shutdown;
pub mod signing;
pub mod sql;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod types;
pub mod validate;

pub use error::{Error, FieldViolations};
pub use types::{AccountId, Instant, Minor};
