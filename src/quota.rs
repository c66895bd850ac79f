//! Per-tenant rate limits (`[rate_limits]`): one GCRA bucket per tenant and RPC
//! (ReportOutcome, Classify, SubscribeOutcomes), from `governor`.
//!
//! Owns the configuration, the buckets and their memory bound. It decides only whether a
//! request may go on now and, if not, how long to wait; what a refusal looks like on the
//! wire is each edge's business (`api::error` for gRPC), and it knows nothing about outcomes.
//!
//! The key is the tenant a request acts for, after authentication and tenant validation
//! (so it is at most `limits.max_tenant_bytes` of `[A-Za-z0-9._-]`). With auth on, that
//! is the API key's tenant; with auth off it is whatever the request names, so the key
//! space is chosen by the caller: at most `max_tenants` tenants get a bucket of their
//! own per RPC, and tenants seen after that share one overflow bucket until idle buckets
//! are dropped (an idle bucket is one indistinguishable from a full one). Tenants with
//! their own `[rate_limits.tenants.<name>]` entry have fixed buckets outside that count.

use crate::domain::{Tenant, TenantError};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The `[rate_limits]` table. Rates are per tenant and per replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Enforce the limits below.
    pub enabled: bool,
    /// Sustained `ReportOutcome` calls per second per tenant.
    pub report_per_second: NonZeroU32,
    /// `ReportOutcome` calls a tenant may make at once after being idle.
    pub report_burst: NonZeroU32,
    /// Sustained `Classify` calls per second per tenant.
    pub classify_per_second: NonZeroU32,
    /// `Classify` calls a tenant may make at once after being idle.
    pub classify_burst: NonZeroU32,
    /// Sustained `SubscribeOutcomes` calls per minute per tenant.
    pub subscribe_per_minute: NonZeroU32,
    /// `SubscribeOutcomes` calls a tenant may make at once after being idle.
    pub subscribe_burst: NonZeroU32,
    /// Most tenants with buckets of their own per RPC; later ones share one bucket.
    pub max_tenants: NonZeroUsize,
    /// Per-tenant overrides (`[rate_limits.tenants.<tenant>]`); unset keys keep the
    /// defaults above.
    pub tenants: BTreeMap<String, TenantRateLimits>,
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            report_per_second: nz(1000),
            report_burst: nz(2000),
            classify_per_second: nz(1000),
            classify_burst: nz(2000),
            subscribe_per_minute: nz(60),
            subscribe_burst: nz(20),
            max_tenants: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            tenants: BTreeMap::new(),
        }
    }
}

/// One `[rate_limits.tenants.<tenant>]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRateLimits {
    pub report_per_second: Option<NonZeroU32>,
    pub report_burst: Option<NonZeroU32>,
    pub classify_per_second: Option<NonZeroU32>,
    pub classify_burst: Option<NonZeroU32>,
    pub subscribe_per_minute: Option<NonZeroU32>,
    pub subscribe_burst: Option<NonZeroU32>,
}

/// The RPCs that are rate limited, each with its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedRpc {
    Report = 0,
    Classify = 1,
    Subscribe = 2,
}

impl LimitedRpc {
    /// The gRPC method name.
    pub fn method(self) -> &'static str {
        match self {
            LimitedRpc::Report => "ReportOutcome",
            LimitedRpc::Classify => "Classify",
            LimitedRpc::Subscribe => "SubscribeOutcomes",
        }
    }
}

/// A rate, as configured: `count` per `per`, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Per,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
}

impl Rate {
    fn quota(self) -> Quota {
        match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
        }
        .allow_burst(self.burst)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.per {
            Per::Second => "second",
            Per::Minute => "minute",
        };
        write!(f, "{} per {per}, burst {}", self.count, self.burst)
    }
}

impl RateLimitConfig {
    /// The rates of `tenant` (its override, else the defaults), indexed by [`LimitedRpc`].
    pub fn rates(&self, tenant: Option<&TenantRateLimits>) -> [Rate; 3] {
        let o = tenant.cloned().unwrap_or_default();
        [
            Rate {
                count: o.report_per_second.unwrap_or(self.report_per_second),
                per: Per::Second,
                burst: o.report_burst.unwrap_or(self.report_burst),
            },
            Rate {
                count: o.classify_per_second.unwrap_or(self.classify_per_second),
                per: Per::Second,
                burst: o.classify_burst.unwrap_or(self.classify_burst),
            },
            Rate {
                count: o.subscribe_per_minute.unwrap_or(self.subscribe_per_minute),
                per: Per::Minute,
                burst: o.subscribe_burst.unwrap_or(self.subscribe_burst),
            },
        ]
    }

    /// Checks what serde cannot: override names are tenant names.
    pub fn validate(&self, max_tenant_bytes: usize) -> Result<(), String> {
        for name in self.tenants.keys() {
            let field = format!("rate_limits.tenants.{name}");
            match Tenant::parse(name, max_tenant_bytes) {
                Ok(_) => {}
                Err(TenantError::Empty) => {
                    return Err(format!("{field}: the tenant name must not be empty"));
                }
                Err(e) => return Err(format!("{field}: tenant name {e}")),
            }
        }
        Ok(())
    }
}

/// A refused request: which limit and how long until one more call would conform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub rpc: LimitedRpc,
    pub tenant: String,
    pub rate: Rate,
    pub retry_after: Duration,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limit of tenant `{}` for {} reached ({}); retry in {:?}",
            self.tenant,
            self.rpc.method(),
            self.rate,
            self.retry_after
        )
    }
}

/// The state of the shared buckets: governor's concurrent map, plus a count of the
/// tenants in it so that an unseen tenant beyond `max` goes to the overflow bucket.
#[derive(Debug)]
pub struct TenantStore {
    map: DashMapStateStore<String>,
    /// Tenants in `map`: counted on insertion, recounted when idle ones are dropped.
    /// Racing insertions may count a tenant twice, which only errs towards the bound.
    tracked: AtomicUsize,
    max: usize,
    /// The key every tenant beyond `max` shares; not a valid tenant name, so it cannot
    /// collide with one.
    overflow: String,
}

/// The key of the overflow bucket.
const OVERFLOW_KEY: &str = "*";

impl TenantStore {
    fn new(max: usize) -> Self {
        TenantStore {
            map: DashMapStateStore::default(),
            tracked: AtomicUsize::new(0),
            max,
            overflow: OVERFLOW_KEY.to_owned(),
        }
    }
}

impl StateStore for TenantStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // A tenant already tracked, or a new one while there is room, has its own bucket.
        let own = self.map.contains_key(key)
            || self.tracked.fetch_add(1, Ordering::Relaxed) < self.max
            || {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                false
            };
        let key = if own { key } else { &self.overflow };
        StateStore::measure_and_replace(&self.map, key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for TenantStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
        self.tracked.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

type Shared<C> = RateLimiter<String, TenantStore, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Own<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The buckets of every tenant. Checking costs a couple of map lookups and an atomic
/// compare-and-swap; nothing is allocated unless the request is refused.
pub struct RateLimits<C: Clock = DefaultClock> {
    clock: C,
    default_rates: [Rate; 3],
    shared: [Shared<C>; 3],
    overrides: HashMap<String, ([Rate; 3], [Own<C>; 3])>,
    /// Tenants named in metrics (configured ones); every other is `other`, so the label
    /// set stays bounded whoever picks the tenant names.
    known: HashSet<String>,
    refused: Option<Counter<u64>>,
}

impl<C: Clock> std::fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("default_rates", &self.default_rates)
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RateLimits<DefaultClock> {
    /// The limits of `config` on the real clock. `known_tenants` (e.g. those of the API
    /// keys) are named in the `calloutcome_rate_limited_requests` metric.
    pub fn new(
        config: &RateLimitConfig,
        known_tenants: impl IntoIterator<Item = String>,
        meter: Option<&Meter>,
    ) -> Self {
        Self::with_clock(config, known_tenants, meter, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// As [`RateLimits::new`], on `clock` (tests use a fake one).
    pub fn with_clock(
        config: &RateLimitConfig,
        known_tenants: impl IntoIterator<Item = String>,
        meter: Option<&Meter>,
        clock: C,
    ) -> Self {
        let default_rates = config.rates(None);
        let max = config.max_tenants.get();
        let shared = default_rates
            .map(|rate| RateLimiter::new(rate.quota(), TenantStore::new(max), clock.clone()));
        let overrides = config
            .tenants
            .iter()
            .map(|(tenant, o)| {
                let rates = config.rates(Some(o));
                let own =
                    rates.map(|rate| RateLimiter::direct_with_clock(rate.quota(), clock.clone()));
                (tenant.clone(), (rates, own))
            })
            .collect();
        let mut known: HashSet<String> = known_tenants.into_iter().collect();
        known.extend(config.tenants.keys().cloned());
        RateLimits {
            clock,
            default_rates,
            shared,
            overrides,
            known,
            refused: meter.map(|m| {
                m.u64_counter("calloutcome_rate_limited_requests")
                    .with_description(
                        "Requests refused with RESOURCE_EXHAUSTED by a per-tenant rate limit, by RPC method and tenant (configured tenants only; others are `other`).",
                    )
                    .build()
            }),
        }
    }

    /// Takes one call of `rpc` from `tenant`'s bucket, or says how long to wait.
    pub fn check(&self, rpc: LimitedRpc, tenant: &Tenant) -> Result<(), RateLimited> {
        let tenant = tenant.as_string();
        let i = rpc as usize;
        let (outcome, rate) = match self.overrides.get(tenant.as_str()) {
            Some((rates, own)) => (own[i].check(), rates[i]),
            None => (self.shared[i].check_key(tenant), self.default_rates[i]),
        };
        let Err(not_until) = outcome else {
            return Ok(());
        };
        let retry_after = not_until.wait_time_from(self.clock.now());
        if let Some(counter) = &self.refused {
            let label = if self.known.contains(tenant) {
                tenant.clone()
            } else {
                "other".to_owned()
            };
            counter.add(
                1,
                &[
                    KeyValue::new("rpc_method", rpc.method()),
                    KeyValue::new("tenant", label),
                ],
            );
        }
        tracing::debug!(tenant = %tenant, rpc = rpc.method(), ?retry_after, "rate limited");
        Err(RateLimited {
            rpc,
            tenant: tenant.clone(),
            rate,
            retry_after,
        })
    }

    /// Drops idle tenants' buckets (they are indistinguishable from new ones) and frees
    /// their memory, so the overflow bucket only serves while `max_tenants` are active.
    pub fn housekeeping(&self) {
        for limiter in &self.shared {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Tenants with a bucket of their own for `rpc` (the overflow bucket included).
    pub fn tracked(&self, rpc: LimitedRpc) -> usize {
        self.shared[rpc as usize].len()
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> RateLimits<C>
where
    C::Instant: Send + Sync,
{
    /// Runs [`RateLimits::housekeeping`] every `every` until `stop` is cancelled or the
    /// limits are dropped.
    pub fn spawn_housekeeping(
        self: &Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        let limits = Arc::downgrade(self);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match limits.upgrade() {
                    Some(limits) => limits.housekeeping(),
                    None => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn config(per_second: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            report_per_second: nz(per_second),
            report_burst: nz(burst),
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait_and_refills() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&config(10, 3), [], None, clock.clone());
        let acme = Tenant::parse("acme", 64).unwrap();
        for _ in 0..3 {
            limits
                .check(LimitedRpc::Report, &acme)
                .expect("within burst");
        }
        let refused = limits
            .check(LimitedRpc::Report, &acme)
            .expect_err("over the burst");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.rpc, LimitedRpc::Report);
        assert!(
            refused.to_string().contains("10 per second, burst 3"),
            "{refused}"
        );
        // Other tenants and other RPCs have buckets of their own.
        limits
            .check(LimitedRpc::Report, &Tenant::parse("globex", 64).unwrap())
            .expect("other tenant");
        limits
            .check(LimitedRpc::Classify, &acme)
            .expect("other rpc");
        clock.advance(refused.retry_after);
        limits.check(LimitedRpc::Report, &acme).expect("refilled");
        assert!(limits.check(LimitedRpc::Report, &acme).is_err());
    }

    #[test]
    fn overrides_have_their_own_rates() {
        let clock = FakeRelativeClock::default();
        let mut c = config(10, 1);
        c.tenants.insert(
            "big".into(),
            TenantRateLimits {
                report_burst: Some(nz(5)),
                ..TenantRateLimits::default()
            },
        );
        let limits = RateLimits::with_clock(&c, [], None, clock);
        let big = Tenant::parse("big", 64).unwrap();
        for _ in 0..5 {
            limits
                .check(LimitedRpc::Report, &big)
                .expect("override burst");
        }
        let refused = limits.check(LimitedRpc::Report, &big).expect_err("over");
        assert_eq!(refused.rate.burst.get(), 5);
        assert_eq!(refused.rate.count.get(), 10);
        let small = Tenant::parse("small", 64).unwrap();
        limits
            .check(LimitedRpc::Report, &small)
            .expect("default burst");
        assert!(limits.check(LimitedRpc::Report, &small).is_err());
    }

    #[test]
    fn the_tenant_key_space_is_bounded() {
        let clock = FakeRelativeClock::default();
        let mut c = config(1, 1);
        c.max_tenants = NonZeroUsize::new(4).expect("4");
        let limits = RateLimits::with_clock(&c, [], None, clock.clone());
        for i in 0..4 {
            limits
                .check(
                    LimitedRpc::Report,
                    &Tenant::parse_owned(format!("t{i}"), 64).unwrap(),
                )
                .expect("own bucket");
        }
        // Beyond the bound new tenants share one bucket: the first passes, the next not.
        limits
            .check(LimitedRpc::Report, &Tenant::parse("n1", 64).unwrap())
            .expect("overflow bucket");
        assert!(
            limits
                .check(LimitedRpc::Report, &Tenant::parse("n2", 64).unwrap())
                .is_err()
        );
        // ... while known tenants keep theirs.
        assert!(
            limits
                .check(LimitedRpc::Report, &Tenant::parse("t0", 64).unwrap())
                .is_err()
        );
        assert_eq!(limits.tracked(LimitedRpc::Report), 5);
        // Once idle, the buckets are dropped and new tenants get their own again.
        clock.advance(Duration::from_secs(2));
        limits.housekeeping();
        assert_eq!(limits.tracked(LimitedRpc::Report), 0);
        limits
            .check(LimitedRpc::Report, &Tenant::parse("n2", 64).unwrap())
            .expect("own bucket again");
        for i in 0..10_000 {
            let _ = limits.check(
                LimitedRpc::Report,
                &Tenant::parse_owned(format!("flood{i}"), 64).unwrap(),
            );
        }
        assert!(limits.tracked(LimitedRpc::Report) <= 5);
    }

    #[test]
    fn override_names_must_be_tenant_names() {
        let mut c = RateLimitConfig::default();
        c.tenants.insert("a/b".into(), TenantRateLimits::default());
        let err = c.validate(64).expect_err("bad name");
        assert!(err.starts_with("rate_limits.tenants.a/b"), "{err}");
        let mut c = RateLimitConfig::default();
        c.tenants.insert("acme".into(), TenantRateLimits::default());
        c.validate(64).expect("valid");
    }
}
