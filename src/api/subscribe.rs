//! `SubscribeOutcomes`: validates a subscription, caps how many run at once, converts
//! deliveries to the wire, and ends every stream with its last resume token when the
//! server shuts down.
//!
//! tonic's concurrency limit and timeout stop at the response headers, so the permits
//! here live *inside* the stream and are released when the stream is dropped.

use super::convert::timestamp;
use super::error::{ApiError, StreamEnd};
use super::validate::{FieldViolation, RequestLimits};
use crate::domain::Category;
use crate::events::{
    Delivery, EventLog, Filter, GapReason, Position, Start, SubscriptionRequest, TokenError, token,
};
use crate::proto as pb;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Metadata key of the last resume token on a stream's final status.
pub use super::error::RESUME_TOKEN_METADATA;

/// Subscription settings (`[subscriptions]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionConfig {
    /// Heartbeat interval while no event is delivered.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Most concurrent subscriptions on this replica.
    pub max_total: usize,
    /// Most concurrent subscriptions per tenant on this replica.
    pub max_per_tenant: usize,
    /// Most filter entries (categories + codes + destinations + labels) per subscription.
    pub max_filter_entries: usize,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            heartbeat: Duration::from_secs(15),
            max_total: 10_000,
            max_per_tenant: 2_000,
            max_filter_entries: 256,
        }
    }
}

/// Caps on concurrent subscriptions, global and per tenant.
#[derive(Debug)]
pub struct SubscriptionPermits {
    global: Arc<Semaphore>,
    max_per_tenant: usize,
    per_tenant: Arc<Mutex<HashMap<String, usize>>>,
}

/// A running subscription's hold on the caps; released on drop.
#[derive(Debug)]
pub struct Permit {
    _global: OwnedSemaphorePermit,
    tenant: String,
    per_tenant: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.per_tenant.lock();
        if let Some(n) = map.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

impl SubscriptionPermits {
    pub fn new(max_total: usize, max_per_tenant: usize) -> Self {
        SubscriptionPermits {
            global: Arc::new(Semaphore::new(max_total)),
            max_per_tenant,
            per_tenant: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a permit for `tenant`, or says which cap is reached.
    pub fn try_acquire(&self, tenant: &str) -> Result<Permit, ApiError> {
        let global = Arc::clone(&self.global).try_acquire_owned().map_err(|_| {
            ApiError::SubscriptionCap("too many concurrent subscriptions on this server".into())
        })?;
        let mut map = self.per_tenant.lock();
        let n = map.entry(tenant.to_owned()).or_insert(0);
        if *n >= self.max_per_tenant {
            return Err(ApiError::SubscriptionCap(format!(
                "too many concurrent subscriptions for tenant {tenant} (at most {})",
                self.max_per_tenant
            )));
        }
        *n += 1;
        Ok(Permit {
            _global: global,
            tenant: tenant.to_owned(),
            per_tenant: Arc::clone(&self.per_tenant),
        })
    }

    /// Subscriptions running now.
    pub fn active(&self) -> usize {
        self.per_tenant.lock().values().sum()
    }
}

/// A validated subscription request.
pub fn request(
    tenant: String,
    r: &pb::SubscribeOutcomesRequest,
    limits: &RequestLimits,
    config: &SubscriptionConfig,
    normalize: impl Fn(&str) -> String,
) -> Result<SubscriptionRequest, ApiError> {
    let mut v = Vec::new();
    let entries = r.categories.len() + r.sip_codes.len() + r.destinations.len() + r.labels.len();
    if entries > config.max_filter_entries {
        v.push(FieldViolation::new(
            "categories",
            format!(
                "more than {} filter entries in all",
                config.max_filter_entries
            ),
        ));
    }
    let mut categories = Vec::new();
    for (i, c) in r.categories.iter().enumerate() {
        match super::convert::enum_from_i32::<pb::Category, Category>(*c) {
            Some(c) => categories.push(c),
            None => v.push(FieldViolation::new(
                format!("categories[{i}]"),
                format!("{c} is not a category"),
            )),
        }
    }
    let mut sip_codes = Vec::new();
    for (i, code) in r.sip_codes.iter().enumerate() {
        match u16::try_from(*code) {
            Ok(c) if (200..=699).contains(&c) => sip_codes.push(c),
            _ => v.push(FieldViolation::new(
                format!("sip_codes[{i}]"),
                "must be a final response code, 200 to 699",
            )),
        }
    }
    let mut destinations = Vec::new();
    for (i, d) in r.destinations.iter().enumerate() {
        if d.trim().is_empty() || d.len() > limits.max_party_bytes {
            v.push(FieldViolation::new(
                format!("destinations[{i}]"),
                format!("must be 1 to {} bytes", limits.max_party_bytes),
            ));
        } else {
            destinations.push(normalize(d));
        }
    }
    for (k, val) in &r.labels {
        if k.is_empty()
            || k.len() > limits.max_label_key_bytes
            || val.len() > limits.max_label_value_bytes
        {
            v.push(FieldViolation::new(
                format!("labels[{k:?}]"),
                "label key or value is empty or too long",
            ));
        }
    }
    let start = if !r.resume_token.is_empty() {
        match token::decode(&tenant, &r.resume_token) {
            Ok(p) => Start::After(p),
            Err(TokenError::OtherTenant) => {
                return Err(ApiError::PermissionDenied(
                    "the resume token belongs to another tenant".into(),
                ));
            }
            Err(TokenError::Malformed) => {
                v.push(FieldViolation::new("resume_token", "is malformed"));
                Start::New
            }
        }
    } else {
        match pb::StartPosition::try_from(r.start) {
            Ok(pb::StartPosition::Unspecified | pb::StartPosition::New) => Start::New,
            Ok(pb::StartPosition::Oldest) => Start::Oldest,
            Err(_) => {
                v.push(FieldViolation::new("start", "is not a start position"));
                Start::New
            }
        }
    };
    if !v.is_empty() {
        return Err(ApiError::InvalidArgument(v));
    }
    Ok(SubscriptionRequest {
        tenant,
        filter: Filter {
            categories,
            sip_codes,
            destinations,
            labels: r
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        },
        start,
        heartbeat: config.heartbeat,
    })
}

pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeOutcomesResponse, Status>> + Send + 'static>>;

/// Opens the subscription and wraps it for the wire.
pub async fn open(
    events: Arc<dyn EventLog>,
    request: SubscriptionRequest,
    permit: Permit,
    shutdown: CancellationToken,
) -> Result<ResponseStream, ApiError> {
    let tenant = request.tenant.clone();
    let tenant_end = tenant.clone();
    // Where a stream that ends before its first delivery tells the client to resume.
    let mut last = match request.start {
        Start::After(p) => p,
        Start::New | Start::Oldest => events.head(&tenant).await.map_err(ApiError::Events)?,
    };
    if let Start::Oldest = request.start {
        last.sequence = 0;
    }
    let mut inner = events.subscribe(request).await.map_err(ApiError::Events)?;
    let ended = move |reason: StreamEnd, last: Position| {
        Err(ApiError::StreamEnded {
            reason,
            resume_token: token::encode(&tenant_end, last),
        }
        .into_status())
    };
    let stream = async_stream::stream! {
        // Held for the life of the stream: the caps count running streams.
        let _permit = permit;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    yield Ok(heartbeat(token::encode(&tenant, last)));
                    yield ended(StreamEnd::ShuttingDown, last);
                    break;
                }
                item = inner.next() => match item {
                    Some(Ok(delivery)) => {
                        last = delivery.position();
                        yield Ok(to_wire(&tenant, delivery));
                    }
                    Some(Err(e)) => {
                        yield ended(StreamEnd::LogFailed(e), last);
                        break;
                    }
                    None => {
                        yield ended(StreamEnd::LogClosed, last);
                        break;
                    }
                }
            }
        }
    };
    Ok(Box::pin(stream))
}

fn heartbeat(resume_token: String) -> pb::SubscribeOutcomesResponse {
    pb::SubscribeOutcomesResponse {
        kind: Some(pb::subscribe_outcomes_response::Kind::Heartbeat(
            pb::Heartbeat {
                resume_token,
                sent_at: Some(timestamp(SystemTime::now())),
            },
        )),
    }
}

fn to_wire(tenant: &str, delivery: Delivery) -> pb::SubscribeOutcomesResponse {
    use pb::subscribe_outcomes_response::Kind;
    let token_at = |p: Position| token::encode(tenant, p);
    let kind = match delivery {
        Delivery::Event { event, position } => {
            let e = &event.event;
            Kind::Event(pb::OutcomeEvent {
                event_id: e.event_id.clone(),
                sequence: event.sequence,
                resume_token: token_at(position),
                tenant: e.tenant.clone(),
                outcome: Some((&e.outcome).into()),
                classification: Some((&*e.classification).into()),
                decision: Some((&*e.decision).into()),
                recorded_at: Some(timestamp(e.recorded_at)),
                destination: e.destination.clone(),
            })
        }
        Delivery::Gap {
            first,
            last,
            reason,
            position,
        } => Kind::Gap(
            // `reason` is deprecated, and still filled for clients built before `reason_code`.
            #[allow(deprecated)]
            pb::Gap {
                first_sequence: first,
                last_sequence: last,
                reason: reason.as_str().to_owned(),
                resume_token: token_at(position),
                reason_code: match reason {
                    GapReason::Evicted => pb::GapReason::Evicted,
                    GapReason::EpochChanged => pb::GapReason::EpochChanged,
                }
                .into(),
            },
        ),
        Delivery::Heartbeat { position } => {
            return heartbeat(token_at(position));
        }
    };
    pb::SubscribeOutcomesResponse { kind: Some(kind) }
}
