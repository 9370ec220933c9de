//! Reliability of the real `bowtie` binary, each service run as its own
//! process (`bowtie serve <service>`), as in production:
//!
//! - `crash`: a service killed with SIGKILL in the middle of a stream of
//!   writes (accounts, signals, subscription changes) loses none it
//!   acknowledged, and when the client replays the unacknowledged tail with
//!   the same idempotency keys it duplicates none. On SQLite and PostgreSQL.
//! - `outage`: a PostgreSQL that goes away under load (calls fail fast with
//!   UNAVAILABLE, health turns NOT_SERVING, the service recovers by itself),
//!   and a peer that cannot be reached (calls that need it are UNAVAILABLE
//!   and write nothing; the change-feed consumers catch up once it is back).
//! - `roles`: the per-service PostgreSQL roles of `deploy/postgres`: each
//!   service migrates and serves under its own role and cannot open another
//!   service's schema.

mod crash;
mod outage;
mod roles;
mod support;
