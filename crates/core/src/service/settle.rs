//! Settling a delivery: carrying out on the queue the [`Disposition`] that [`Ackflow::handle`]
//! decided. Both runtimes settle here; they differ only in who deletes a message the worker is
//! done with ([`Deleter`]).

use super::{Ackflow, Disposition};
use crate::{Delivery, PortError};

/// Who deletes a message once the worker is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleter {
    /// The runtime drives its own queue (the single machine): settling deletes the message.
    Worker,
    /// An event source deletes every message its invocation does not report as failed (SQS's
    /// event source mapping with `ReportBatchItemFailures`): settling leaves that to it.
    EventSource,
}

/// What became of a delivery once settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done with it: deleted, dead-lettered, or left for the event source to delete.
    Done,
    /// The message comes back after the disposition's delay. Under [`Deleter::EventSource`] it
    /// must be reported as a failure, or the event source would delete it.
    ComesBack,
}

impl Ackflow {
    /// Carries out `disposition` for `delivery`:
    ///
    /// - `Delete`: deletes the message, or leaves it to an [`Deleter::EventSource`];
    /// - `RetryAfter(d)`: makes it visible again after `d` (so it returns after the backoff, not
    ///   after the queue's visibility timeout);
    /// - `DeadLetter`: moves it to the dead-letter queue.
    ///
    /// An error means the queue call failed: the message then comes back after its visibility
    /// timeout, which the fenced writes make harmless. The caller logs it (and, under an event
    /// source, reports the message as failed).
    pub async fn settle(
        &self,
        delivery: &Delivery,
        disposition: Disposition,
        deleter: Deleter,
    ) -> Result<Settled, PortError> {
        match disposition {
            Disposition::Delete => {
                if deleter == Deleter::Worker {
                    self.queue.delete(&delivery.receipt).await?;
                }
                Ok(Settled::Done)
            }
            Disposition::RetryAfter(delay) => {
                self.queue
                    .change_visibility(&delivery.receipt, delay)
                    .await?;
                Ok(Settled::ComesBack)
            }
            Disposition::DeadLetter => {
                self.queue.dead_letter(delivery).await?;
                Ok(Settled::Done)
            }
        }
    }
}
