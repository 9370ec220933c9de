//! Integration tests of the scoring service through its public gRPC API: a
//! real accounts server and a real scoring server (and, where the feeds
//! matter, real revenue and funnel servers) on random ports, each on its own
//! fresh database, on SQLite and on PostgreSQL (`<scenario>::sqlite`,
//! `<scenario>::postgres`).

mod alerts;
mod book;
mod feeds;
mod health;
mod ingest;
mod model;
mod ownership;
mod retention;
mod segments;
