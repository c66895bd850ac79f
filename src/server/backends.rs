//! Building the report pipeline on the configured backend: the embedded memory store
//! and event log (the default, zero setup), or NATS JetStream shared by several
//! replicas. The one place backends are built, for `serve`, embedded servers and the
//! CLI alike.

use super::ServerError;
use crate::config::{Backend, Config};
use crate::events::EventLog;
use crate::events::memory::MemoryEventLog;
use crate::events::nats::NatsEventLog;
use crate::nats::NatsConnection;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::nats::NatsStore;
use std::sync::Arc;

/// The pipeline and, on NATS, the connection whose state drives health.
#[derive(Debug)]
pub struct Backends {
    pub pipeline: Pipeline,
    pub nats: Option<NatsConnection>,
}

/// Builds the pipeline on `config.backend`. NATS must be reachable at start; after that
/// the client reconnects by itself.
pub async fn build(config: &Config) -> Result<Backends, ServerError> {
    let policy = Arc::new(config.policy()?);
    let region = config.region()?;
    let (store, events, nats): (Arc<dyn Store>, Arc<dyn EventLog>, _) = match config.backend {
        Backend::Memory => (
            Arc::new(MemoryStore::new(config.store.clone())),
            Arc::new(MemoryEventLog::new(config.events.clone())),
            None,
        ),
        Backend::Nats => {
            let connection = NatsConnection::connect(&config.nats).await?;
            let store = NatsStore::open(connection.clone(), config.store.clone()).await?;
            let events = NatsEventLog::open(connection.clone()).await?;
            tracing::info!(url = %config.nats.url, stream = %config.nats.stream, "backend: nats jetstream");
            (Arc::new(store), Arc::new(events), Some(connection))
        }
    };
    Ok(Backends {
        pipeline: Pipeline::new(store, events, policy, region),
        nats,
    })
}
