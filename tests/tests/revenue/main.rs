//! Integration tests of the revenue service.
