//! Opaque, stable page tokens.
//!
//! Lists are ordered by a unique, insert-ordered key (UUIDv7 ids), and a token
//! holds the last key of the previous page, so rows inserted meanwhile never
//! shift or repeat later pages (offset paging would). A token is bound to a
//! fingerprint of the filters it was issued for; reusing it with other filters
//! is INVALID_ARGUMENT.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bowtie_proto::common;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// A parsed page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: u64,
    /// Return rows whose key is greater than this one.
    pub after: Option<String>,
    filters: String,
}

fn fingerprint(filters: &str) -> String {
    hex::encode(&Sha256::digest(filters.as_bytes())[..8])
}

impl Page {
    /// Parses the request's paging; `filters` is any stable rendering of the filters.
    pub fn parse(page: Option<&common::PageRequest>, filters: &str) -> Result<Self, Error> {
        let default = common::PageRequest::default();
        let page = page.unwrap_or(&default);
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page.page_size", "must not be negative")),
            n => (n as u64).min(MAX_PAGE_SIZE),
        };
        let fingerprint = fingerprint(filters);
        let after = if page.page_token.is_empty() {
            None
        } else {
            let bad = || Error::invalid("page.page_token", "is not a token issued for this query");
            let bytes = URL_SAFE_NO_PAD
                .decode(page.page_token.as_bytes())
                .map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let (token_filters, after) = text.split_once('|').ok_or_else(bad)?;
            if token_filters != fingerprint || after.is_empty() {
                return Err(bad());
            }
            Some(after.to_owned())
        };
        Ok(Self {
            size,
            after,
            filters: fingerprint,
        })
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Trims the fetched rows to the page and builds the response paging.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> (Vec<T>, common::PageResponse) {
        let more = rows.len() as u64 > self.size;
        rows.truncate(self.size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => URL_SAFE_NO_PAD.encode(format!("{}|{}", self.filters, key(last))),
            _ => String::new(),
        };
        (rows, common::PageResponse { next_page_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_continues_after_the_last_row_of_the_page() -> Result<(), Error> {
        let page = Page::parse(
            Some(&common::PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
            "segment=1",
        )?;
        let (rows, paging) = page.finish(vec!["a", "b", "c"], |r| r.to_string());
        assert_eq!(rows, vec!["a", "b"]);
        let next = Page::parse(
            Some(&common::PageRequest {
                page_size: 2,
                page_token: paging.next_page_token,
            }),
            "segment=1",
        )?;
        assert_eq!(next.after.as_deref(), Some("b"));
        Ok(())
    }

    #[test]
    fn a_token_is_rejected_with_other_filters_or_when_forged() -> Result<(), Error> {
        let page = Page::parse(None, "segment=1")?;
        let (_, paging) = page.finish(vec!["a"; 51], |r| r.to_string());
        let reuse = Page::parse(
            Some(&common::PageRequest {
                page_size: 0,
                page_token: paging.next_page_token,
            }),
            "segment=2",
        );
        assert!(matches!(reuse, Err(Error::InvalidArgument(_))));
        let forged = Page::parse(
            Some(&common::PageRequest {
                page_size: 0,
                page_token: "!!".into(),
            }),
            "segment=1",
        );
        assert!(matches!(forged, Err(Error::InvalidArgument(_))));
        Ok(())
    }

    #[test]
    fn the_last_page_has_no_token_and_sizes_are_clamped() -> Result<(), Error> {
        let page = Page::parse(
            Some(&common::PageRequest {
                page_size: 5000,
                page_token: String::new(),
            }),
            "",
        )?;
        assert_eq!(page.size, MAX_PAGE_SIZE);
        let (_, paging) = page.finish(vec![1, 2], |r| r.to_string());
        assert!(paging.next_page_token.is_empty());
        Ok(())
    }
}
