//! The worker of a runtime that drives its own queue (the single machine): it receives
//! deliveries and works each one, handling and settling it. With an outbox, the queue's and the
//! store's writes of one step are one transaction: the receive starts the attempts, and the
//! outcome's write deletes or delays the message.

use std::sync::Arc;

use super::handle::{AttemptStarts, Handled};
use super::{Ackflow, Deleter, Disposition, Settled};
use crate::{PortError, Received};

impl Ackflow {
    /// Receives up to `max` deliveries. With an outbox, each delivery whose job can start an
    /// attempt now has that start written in the receive's transaction
    /// ([`crate::Outbox::receive_and_start`]).
    pub async fn receive(&self, max: usize) -> Result<Vec<Received>, PortError> {
        let visibility = self.settings.visibility_timeout;
        match &self.outbox {
            Some(outbox) => {
                let plan = Arc::new(AttemptStarts {
                    clock: Arc::clone(&self.clock),
                    settings: self.settings.clone(),
                });
                outbox.receive_and_start(max, visibility, plan).await
            }
            None => Ok(self
                .queue
                .receive(max, visibility)
                .await?
                .into_iter()
                .map(Received::from)
                .collect()),
        }
    }

    /// Handles a received delivery and settles it ([`Deleter::Worker`]). With an outbox, an
    /// attempt's outcome and the message's delete or delay are one transaction: a crash between
    /// the two cannot leave a finished job's message to be received again, and the worker makes
    /// one write where it made two.
    pub async fn work(&self, received: &Received) -> Result<Settled, PortError> {
        let delivery = &received.delivery;
        let Handled {
            disposition,
            settled,
        } = self
            .handle_delivery(
                delivery,
                None,
                Some(&delivery.receipt),
                received.started.clone(),
            )
            .await;
        if !settled {
            return self.settle(delivery, disposition, Deleter::Worker).await;
        }
        Ok(match disposition {
            Disposition::RetryAfter(_) => Settled::ComesBack,
            Disposition::Delete | Disposition::DeadLetter => Settled::Done,
        })
    }
}
