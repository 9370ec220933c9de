//! Integration tests of the HTTP/JSON gateway: the real accounts, revenue,
//! funnel and scoring servers and the real gateway, each on a random port, over SQLite
//! and PostgreSQL (`<scenario>::sqlite`, `<scenario>::postgres`), called over
//! HTTP as a dashboard or a CRM would.

mod api_fuzz;
mod attributes;
mod auth;
mod changes;
mod export;
mod oidc;
mod openapi;
mod reports;
mod scoring;
mod segment;
mod sign_in;
mod status;
mod stripe;
mod success;
mod tags;
mod webhooks;
