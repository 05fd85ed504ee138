//! The one way to open ackflow on AWS: the store and the queue a deployment names
//! ([`AwsConfig`]), over SDK clients built once ([`Clients`]). The functions, `ackflow dlq
//! --aws` and the tests open their deployment through here.

use std::sync::Arc;

use ackflow_core::{Ackflow, Clock, Registry};

use crate::{AwsConfig, Clients, DynamoJobStore, SqsQueue};

/// ackflow's ports on one deployment's queue pair and table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AwsBackend {
    /// The job store on the table.
    pub store: Arc<DynamoJobStore>,
    /// The job queue and its dead-letter queue.
    pub queue: Arc<SqsQueue>,
    /// What the backend was opened with, knobs included.
    pub config: AwsConfig,
}

impl AwsBackend {
    /// The store and the queue named by `config`, on `clients`.
    pub fn new(config: AwsConfig, clients: &Clients) -> Self {
        Self {
            store: Arc::new(
                DynamoJobStore::new(clients.dynamo.clone(), config.table.clone())
                    .keeping(config.settings.retention),
            ),
            queue: Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                config.queue_url.clone(),
                config.dlq_url.clone(),
            )),
            config,
        }
    }

    /// The use cases over this deployment's store and queue, with its settings.
    pub fn ackflow(&self, registry: Registry, clock: Arc<dyn Clock>) -> Ackflow {
        Ackflow::new(
            self.store.clone(),
            self.queue.clone(),
            registry,
            clock,
            self.config.settings.clone(),
        )
    }
}
