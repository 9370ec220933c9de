//! Bad input against real servers: every RPC of every service and every
//! REST route of the gateway gets randomised malformed, boundary and
//! oversized requests and answers each with a clear status (see
//! `bowtie_testkit::robustness`); the message size limit and deadlines hold.
//!
//! `BOWTIE_ROBUSTNESS_REQUESTS` sets the requests per service (a few
//! thousand by default, 25,000 in `make robustness`) and
//! `BOWTIE_ROBUSTNESS_SEED` replays a failed run.

mod filters;
mod limits;
mod random;
