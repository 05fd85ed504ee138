//! The owner's report, from maintained aggregates.

use tracing::warn;

use super::Ackflow;
use crate::{error_chain, Owner, PortError, Report};

impl Ackflow {
    /// The owner's report, from maintained aggregates.
    pub async fn report(&self, owner: &Owner) -> Result<Report, PortError> {
        let now = self.clock.now();
        let figures = self
            .store
            .figures(owner, now.minus(self.settings.report_window))
            .await?;
        let queue = match self.queue.depth().await {
            Ok(depth) => Some(depth),
            Err(e) => {
                warn!(error = %error_chain(&e), "queue depth unavailable for the report");
                None
            }
        };
        Ok(Report::from_figures(
            figures,
            self.settings.report_window,
            now,
            queue,
        ))
    }
}
