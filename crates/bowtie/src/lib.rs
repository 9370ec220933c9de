//! The `bowtie` command as a library: gRPC clients of the services
//! ([`client`]), the demo company ([`demo`]), CSV import ([`import`]), the
//! Stripe backfill ([`stripe_import`]), terminal reports ([`report`]) and
//! streaming exports ([`export`]). The binary is a thin clap front end over
//! these, and the integration tests call them directly.

pub mod client;
pub mod demo;
pub mod export;
pub mod import;
mod import_stream;
pub mod report;
pub mod stripe_import;
