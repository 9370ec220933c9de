//! Bowtie's benchmark cases and the measuring helpers they share; the
//! `bowtie-bench` binary runs them (`make bench`).

pub mod connectors;
pub mod duckdb;
pub mod funnel;
pub mod import;
pub mod issuer;
pub mod load;
pub mod measure;
pub mod revenue;
pub mod scoring;
pub mod success;
pub mod unary;
