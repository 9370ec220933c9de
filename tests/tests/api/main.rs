//! Integration tests of the accounts service through its public gRPC API: a
//! real server on a random port over a fresh database per test, driven with
//! the generated client. Every scenario runs on SQLite and on PostgreSQL
//! (`<scenario>::sqlite`, `<scenario>::postgres`; see `bowtie_testkit`).
//!
//! All modules build into this one test binary, so the crates link once
//! rather than once per file.

mod accounts;
mod attributes;
mod audit;
mod auth;
mod contacts;
mod feed;
mod import_accounts;
mod listing;
mod operations;
mod retention;
mod tags;
