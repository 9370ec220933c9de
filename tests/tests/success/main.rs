//! Integration tests of the success service through its public gRPC API:
//! real accounts, scoring and success servers on random ports, each on its
//! own fresh database, on SQLite and on PostgreSQL (`<scenario>::sqlite`,
//! `<scenario>::postgres`). Triggers arrive the way they do in production:
//! scoring raises alerts from recorded signals and success follows its feed.

mod book;
mod crash;
mod ctas;
mod effectiveness;
mod notify;
mod people;
mod playbooks;
mod segments;
mod steps;
mod sweep;
mod timeline;
mod triggers;
