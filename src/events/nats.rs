//! The [`EventLog`] on a JetStream stream: one log shared by every replica.
//!
//! Owns the event subjects, the message format (JSON of [`NewEvent`]) and the mapping of
//! the streams onto the log contract of [`super`]. Each tenant has a stream of its own
//! (`<nats.stream>-<tenant>`, created on its first event or subscription), so positions
//! and retention are per tenant as the contract asks. Sequences are the tenant stream's
//! sequences and the epoch is its creation time, so a resume token means the same on
//! every replica and survives restarts of every replica; it changes only when the
//! stream is recreated. This module holds no copy of the log; it remembers only which
//! tenant streams it has already created (a stream deleted behind its back is created
//! again on the next failure), and every subscription asks the server afresh.
//!
//! - Every async-nats future on the publishing path is boxed before it is awaited: they
//!   are large, and inline they made the publish step ~14 KB, copied whole at each
//!   move (as in [`crate::store::nats`]).
//! - Publishing waits for JetStream's acknowledgement (bounded by
//!   `nats.request_timeout`) and carries `Nats-Msg-Id = <tenant>.<attempt>.<call id>` (`<tenant>.d.<delivery>` for a callback),
//!   so a report retried on any replica within `nats.duplicate_window` lands once.
//! - A subscription is an ordered consumer filtered on its tenant's subjects, starting
//!   right after its position. JetStream silently moves a start below the stream's
//!   first sequence up to it, so the first sequence is compared here, at the start and
//!   whenever the stream sequence jumps (only eviction makes it jump: the stream holds
//!   the tenant's events alone), and what was lost is signalled as a [`Delivery::Gap`]
//!   exactly as the memory log does.
//! - When the connection to NATS drops, open subscriptions end with
//!   [`EventError::Unavailable`] (the API ends the stream with its last token) and
//!   publishing fails at once with the same error.

use super::{
    Delivery, EventCounters, EventError, EventLog, GapReason, NewEvent, Position, Published,
    RecordedEvent, Start, Subscription, SubscriptionRequest,
};
use crate::nats::{NatsConnection, NatsError, key_token, tenant_token};
use crate::step::Step;
use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::message::PublishMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamExt;

/// The event log on a JetStream stream; cheap to clone.
#[derive(Clone)]
pub struct NatsEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    connection: NatsConnection,
    counters: EventCounters,
    /// Tenants whose stream this process has created (or found) already.
    streams: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// The layout was checked (no all-tenant stream of earlier versions); done at open
    /// when NATS answers, else on first use.
    checked: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for NatsEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEventLog")
            .field("streams", &self.inner.connection.config.stream)
            .finish_non_exhaustive()
    }
}

/// What the log needs to know of the stream right now.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    epoch: u64,
    /// Oldest retained sequence (`last + 1` when nothing is retained).
    first: u64,
    last: u64,
}

fn unavailable(e: impl std::fmt::Display) -> EventError {
    EventError::Unavailable(format!("nats: {e}"))
}

async fn stream_state(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<StreamState, EventError> {
    let stream = jetstream.get_stream(name).await.map_err(unavailable)?;
    let info = stream.cached_info();
    // The creation time is the same on every replica and changes only when the stream
    // is recreated. Nanoseconds since 1970 fit in u64 until 2554.
    let epoch = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(1);
    let last = info.state.last_sequence;
    // An empty stream reports first 0 (never written) or last + 1 (all evicted).
    let first = info.state.first_sequence.max(1).min(last + 1);
    Ok(StreamState { epoch, first, last })
}

impl NatsEventLog {
    /// Checks the layout now when NATS answers (a replica beside the all-tenant stream
    /// of earlier versions does not start); tenant streams are created as tenants come.
    pub async fn open(connection: NatsConnection) -> Result<Self, NatsError> {
        let checked = tokio::sync::OnceCell::new();
        if connection.is_connected() {
            match connection.check_no_shared_stream().await {
                Ok(()) => {
                    let _ = checked.set(());
                }
                // Only a layout an operator must fix stops the replica; JetStream not
                // answering yet (a cluster still electing its leader) is checked again
                // on first use, as when NATS is not up at all.
                Err(e @ NatsError::Layout { .. }) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "nats: streams not checked yet"),
            }
        }
        Ok(NatsEventLog {
            inner: Arc::new(Inner {
                connection,
                counters: EventCounters::default(),
                streams: parking_lot::Mutex::default(),
                checked,
            }),
        })
    }

    /// The layout check, once NATS answers (see [`NatsEventLog::open`]).
    async fn checked(&self) -> Result<(), EventError> {
        check_events(&self.inner.connection)?;
        let connection = &self.inner.connection;
        self.inner
            .checked
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    connection.config.request_timeout,
                    connection.check_no_shared_stream(),
                )
                .await
                .map_err(|_| unavailable("no answer checking the streams in time"))?
                .map_err(|e| {
                    tracing::error!(error = %e, "nats: events cannot be served");
                    EventError::Backend(e.to_string())
                })
            })
            .await
            .map(|_| ())
    }

    /// Creates `tenant`'s stream unless this process did already.
    async fn ensure_stream(&self, tenant: &str) -> Result<(), EventError> {
        if self.inner.streams.lock().contains(tenant) {
            return Ok(());
        }
        // Boxed, as every async-nats future here: the publish's future would otherwise
        // hold the stream creation's inline (see the module docs).
        Box::pin(async {
            self.checked().await?;
            self.create_stream(tenant).await
        })
        .await
    }

    async fn create_stream(&self, tenant: &str) -> Result<(), EventError> {
        let connection = &self.inner.connection;
        tokio::time::timeout(
            connection.config.request_timeout,
            connection.ensure_tenant_stream(tenant),
        )
        .await
        .map_err(|_| unavailable("no answer to the stream creation in time"))?
        // Already says `nats: cannot set up ...`.
        .map_err(|e| EventError::Unavailable(e.to_string()))?;
        self.inner.streams.lock().insert(tenant.to_owned());
        Ok(())
    }

    /// The `Nats-Msg-Id` of a report: the report key, so retries deduplicate.
    fn message_id(event: &NewEvent) -> String {
        match &event.outcome.delivery {
            None => format!(
                "{}.{}.{}",
                tenant_token(&event.tenant),
                event.outcome.attempt.unwrap_or(0),
                key_token(&event.outcome.call_id)
            ),
            Some(delivery) => format!("{}.d.{}", tenant_token(&event.tenant), key_token(delivery)),
        }
    }
}

impl NatsEventLog {
    /// Publishes to JetStream and waits for its acknowledgement.
    async fn publish_js(&self, event: NewEvent) -> Result<Published, EventError> {
        let connection = &self.inner.connection;
        check_events(connection)?;
        self.ensure_stream(&event.tenant).await?;
        let config = &connection.config;
        let subject = config.event_subject(&event.tenant, event.classification.category.as_str());
        let id = Self::message_id(&event);
        let payload = serde_json::to_vec(&event)
            .map_err(|e| EventError::Backend(format!("cannot encode the event: {e}")))?;
        let payload = bytes::Bytes::from(payload);
        let subject = async_nats::Subject::from(subject);
        // The ack is the point of the whole call: no ack, no acknowledgement to the caller.
        // The message is built per attempt (a second one only when the stream was gone).
        let publish = || {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id.as_str());
            let subject = subject.clone();
            async move {
                tokio::time::timeout(config.request_timeout, async {
                    connection
                        .jetstream
                        .send_publish(subject, message)
                        .await?
                        .await
                })
                .await
            }
        };
        let ack = match Box::pin(publish()).await {
            Ok(Ok(ack)) => ack,
            // No stream listens on the subject: it was deleted behind our back.
            Ok(Err(e))
                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound =>
            {
                self.inner.streams.lock().remove(&event.tenant);
                Box::pin(self.create_stream(&event.tenant)).await?;
                Box::pin(publish())
                    .await
                    .map_err(|_| unavailable("no publish acknowledgement in time"))?
                    .map_err(unavailable)?
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no publish acknowledgement in time")),
        };
        if !ack.duplicate {
            EventCounters::add(&self.inner.counters.published, 1);
            return Ok(Published {
                sequence: ack.sequence,
                existing: None,
            });
        }
        // JetStream already holds this report's event (same Nats-Msg-Id): the caller must
        // be told about that one, the one subscribers get, not the copy just offered.
        let stream_name = config.tenant_stream(&event.tenant);
        let existing = Box::pin(tokio::time::timeout(config.request_timeout, async {
            let stream = connection
                .jetstream
                .get_stream_no_info(&stream_name)
                .await
                .map_err(unavailable)?;
            stream.direct_get(ack.sequence).await.map_err(unavailable)
        }))
        .await
        .map_err(|_| unavailable("no answer reading the existing event in time"))??;
        let kept: NewEvent = serde_json::from_slice(&existing.payload).map_err(|e| {
            EventError::Backend(format!("the existing event cannot be decoded: {e}"))
        })?;
        Ok(Published {
            sequence: ack.sequence,
            existing: Some(Arc::new(RecordedEvent {
                sequence: ack.sequence,
                event: kept,
            })),
        })
    }
}

#[async_trait::async_trait]
impl EventLog for NatsEventLog {
    fn publish(&self, event: NewEvent) -> Step<'_, Result<Published, EventError>> {
        Step::pending(
            self.inner
                .connection
                .unless_lost(self.publish_js(event), || {
                    EventError::Unavailable("the connection to NATS was lost".into())
                }),
        )
    }

    async fn subscribe(&self, request: SubscriptionRequest) -> Result<Subscription, EventError> {
        let inner = Arc::clone(&self.inner);
        let connection = &inner.connection;
        check_events(connection)?;
        self.ensure_stream(&request.tenant).await?;
        let stream_name = connection.config.tenant_stream(&request.tenant);
        let state = stream_state(&connection.jetstream, &stream_name).await?;
        let epoch = state.epoch;
        // `position` is the last sequence seen; a pending gap is signalled first.
        let (mut position, pending_gap) = match request.start {
            Start::New => (state.last, None),
            Start::Oldest => (state.first - 1, None),
            Start::After(p) if p.epoch != epoch => (
                state.first - 1,
                Some((p.sequence.saturating_add(1), 0, GapReason::EpochChanged)),
            ),
            Start::After(p) if p.sequence > state.last => {
                return Err(EventError::TokenFromTheFuture {
                    sequence: p.sequence,
                    last: state.last,
                });
            }
            // JetStream would clamp this start silently: say what was evicted instead.
            Start::After(p) if p.sequence + 1 < state.first => (
                state.first - 1,
                Some((p.sequence + 1, state.first - 1, GapReason::Evicted)),
            ),
            Start::After(p) => (p.sequence, None),
        };
        let stream = connection
            .jetstream
            .get_stream(&stream_name)
            .await
            .map_err(unavailable)?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: position + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let mut connected = connection.connected();
        let jetstream = connection.jetstream.clone();
        let heartbeat_every = request.heartbeat.max(Duration::from_millis(10));
        let out = async_stream::stream! {
            let counters = &inner.counters;
            if let Some((from, to, reason)) = pending_gap {
                let (from, to): (u64, u64) = (from, to);
                EventCounters::add(&counters.gaps, 1);
                EventCounters::add(&counters.skipped, (to + 1).saturating_sub(from));
                yield Ok(Delivery::Gap {
                    first: from,
                    last: to,
                    reason,
                    position: Position { epoch, sequence: position },
                });
            }
            let mut heartbeat = tokio::time::interval_at(
                tokio::time::Instant::now() + heartbeat_every,
                heartbeat_every,
            );
            heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    // The connection dropped: end with the last position (the API puts
                    // it in the final status) rather than hang until NATS returns.
                    () = async { let _ = connected.wait_for(|up| !*up).await; } => {
                        yield Err(EventError::Unavailable("connection to NATS lost".into()));
                        break;
                    }
                    item = messages.next() => {
                        let message = match item {
                            Some(Ok(message)) => message,
                            Some(Err(e)) => {
                                yield Err(unavailable(e));
                                break;
                            }
                            None => break,
                        };
                        let sequence = match message.info() {
                            Ok(info) => info.stream_sequence,
                            Err(e) => {
                                yield Err(EventError::Backend(format!("nats: message without metadata: {e}")));
                                break;
                            }
                        };
                        if sequence <= position {
                            // Already seen (a consumer recreated after a hiccup may
                            // repeat): at most once per subscription.
                            continue;
                        }
                        if sequence > position + 1 {
                            // Evicted events (the stream is the tenant's alone): ask it.
                            match stream_state(&jetstream, &stream_name).await {
                                Ok(now) if now.epoch != epoch => {
                                    yield Err(EventError::Unavailable("the event stream was recreated".into()));
                                    break;
                                }
                                Ok(now) if now.first > position + 1 => {
                                    let to = now.first.min(sequence) - 1;
                                    EventCounters::add(&counters.gaps, 1);
                                    EventCounters::add(&counters.skipped, to - position);
                                    yield Ok(Delivery::Gap {
                                        first: position + 1,
                                        last: to,
                                        reason: GapReason::Evicted,
                                        position: Position { epoch, sequence: to },
                                    });
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    yield Err(e);
                                    break;
                                }
                            }
                        }
                        position = sequence;
                        let event: NewEvent = match serde_json::from_slice(&message.payload) {
                            Ok(event) => event,
                            Err(e) => {
                                // Not written by this service (someone published on our
                                // subjects): passed over, like an event the filter rejects.
                                tracing::warn!(sequence, error = %e, "nats: undecodable event passed over");
                                continue;
                            }
                        };
                        if event.tenant == request.tenant && request.filter.matches(&event) {
                            EventCounters::add(&counters.delivered, 1);
                            heartbeat.reset();
                            yield Ok(Delivery::Event {
                                event: Arc::new(RecordedEvent { sequence, event }),
                                position: Position { epoch, sequence },
                            });
                        }
                    }
                    _ = heartbeat.tick() => {
                        EventCounters::add(&counters.heartbeats, 1);
                        yield Ok(Delivery::Heartbeat {
                            position: Position { epoch, sequence: position },
                        });
                    }
                }
            }
        };
        Ok(Box::pin(out))
    }

    async fn head(&self, tenant: &str) -> Result<Position, EventError> {
        let connection = &self.inner.connection;
        check_events(connection)?;
        // Created, so that the epoch of the position is the one a subscription will see.
        self.ensure_stream(tenant).await?;
        let state = stream_state(
            &connection.jetstream,
            &connection.config.tenant_stream(tenant),
        )
        .await?;
        Ok(Position {
            epoch: state.epoch,
            sequence: state.last,
        })
    }

    fn counters(&self) -> &EventCounters {
        &self.inner.counters
    }

    async fn not_ready(&self) -> Option<String> {
        // The shared condition first, so that the store and the log say the same.
        if let Some(reason) = self.inner.connection.not_ready() {
            return Some(reason);
        }
        self.checked().await.err().map(|e| e.to_string())
    }
}

/// `Unavailable` when not connected or a quorum is lost: callers fail fast instead of
/// queueing a request behind a dead connection.
fn check_events(connection: &NatsConnection) -> Result<(), EventError> {
    match connection.refusal() {
        None => Ok(()),
        Some(reason) => Err(EventError::Unavailable(format!("nats: {reason}"))),
    }
}
