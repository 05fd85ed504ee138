//! Listing an owner's jobs, newest first.

use super::Ackflow;
use crate::{ListQuery, Owner, Page, PortError};

/// Page size bounds of listings.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;

impl Ackflow {
    /// The owner's jobs, newest first; `limit` is bounded to 1–100 (default 20).
    pub async fn list(&self, owner: &Owner, mut query: ListQuery) -> Result<Page, PortError> {
        query.limit = if query.limit == 0 {
            DEFAULT_PAGE
        } else {
            query.limit.min(MAX_PAGE)
        };
        self.store.list(owner, &query).await
    }
}
