//! Integration tests of the revenue service through its public gRPC API: a
//! real accounts server and a real revenue server on random ports over fresh
//! databases, driven with the generated clients. Every scenario runs on
//! SQLite and on PostgreSQL (`<scenario>::sqlite`, `<scenario>::postgres`).

mod books;
mod churn;
mod cuts;
mod feed;
mod import;
mod ownership;
mod renewals;
mod reports;
mod subscriptions;
mod trials;
