//! Integration tests of the HTTP/JSON gateway: the real accounts, revenue and
//! funnel servers and the real gateway, each on a random port, over SQLite
//! and PostgreSQL (`<scenario>::sqlite`, `<scenario>::postgres`), called over
//! HTTP as a dashboard or a CRM would.

mod auth;
mod openapi;
mod reports;
mod status;
mod webhooks;
