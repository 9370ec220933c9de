//! The scoring service (DESIGN.md section 3).
pub mod domain;
pub mod model;
