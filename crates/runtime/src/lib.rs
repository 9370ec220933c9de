//! The shared runtime of every Bowtie service, written once: layered
//! configuration, telemetry, the database connection and migrations, the error
//! type and its mapping to gRPC statuses, API-key auth, idempotency keys, the
//! outbox-backed change feed, TLS and the server bootstrap.
//!
//! A service crate contributes its domain, its tables and its handlers; how it
//! is configured, secured, observed, stored and served comes from here.

pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod feed;
pub mod idempotency;
pub mod limits;
pub mod paging;
pub mod peer;
pub mod schema;
pub mod server;
pub mod shutdown;
pub mod sql;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;

pub use error::{Error, FieldViolations};
