//! Fair admission (`server.max_in_flight` and its shares): how many requests of the
//! public service and the webhook listener are being *handled* at once, in all, per
//! tenant and per connection. Shared by both edges, so that a tenant's share holds
//! whichever door its reports come in by.
//!
//! Owns the counts, the shedding decision and its metrics. A request takes its slot in
//! the handler, once its message has arrived and its tenant is known
//! ([`Admission::admit`]), never before: a stream that sends HEADERS and stalls holds no
//! slot (it is bounded by `server.body_read_timeout`, `max_concurrent_streams` and the
//! connection cap instead). No tenant may hold more than `max_in_flight_per_tenant`
//! slots and no connection more than `max_in_flight_per_connection`, so one caller
//! can fill neither the server nor another tenant's share. A slot is held until the
//! handler returns: for `SubscribeOutcomes` only while the stream opens.
//!
//! It reads nothing of the request; the handler gives the tenant and the connection
//! ([`ConnectionId`], put in the request extensions by the connection loop).

use crate::domain::Tenant;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

/// Which connection a request came on; unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The limits: each 0 means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_in_flight: usize,
    pub per_tenant: usize,
    pub per_connection: usize,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedScope {
    Server,
    Tenant,
    Connection,
}

impl ShedScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ShedScope::Server => "server",
            ShedScope::Tenant => "tenant",
            ShedScope::Connection => "connection",
        }
    }
}

/// Why a request was shed: the limit and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub scope: ShedScope,
    pub limit: usize,
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (who, key) = match self.scope {
            ShedScope::Server => ("the server", ""),
            ShedScope::Tenant => ("this tenant's share of the server", "_per_tenant"),
            ShedScope::Connection => ("this connection's share of the server", "_per_connection"),
        };
        write!(
            f,
            "overloaded: {} requests in flight for {who} (server.max_in_flight{key}); nothing was processed, retry with backoff",
            self.limit
        )
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// By a 64-bit hash of the tenant name: no copy of the name per request.
    tenants: HashMap<u64, usize, foldhash::fast::FixedState>,
    connections: HashMap<u64, usize, foldhash::fast::FixedState>,
}

fn decrement(map: &mut HashMap<u64, usize, foldhash::fast::FixedState>, key: u64) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

struct Instruments {
    shed: Counter<u64>,
    _in_flight: ObservableGauge<u64>,
}

/// Shared by every handler; see the module docs.
pub struct Admission {
    limits: AdmissionLimits,
    counts: Mutex<Counts>,
    hasher: foldhash::fast::FixedState,
    /// Tenants named in the shed metric; any other is `other` (a bounded label).
    known: HashSet<String>,
    instruments: Option<Instruments>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A request's slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    tenant: u64,
    connection: Option<u64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        counts.total -= 1;
        decrement(&mut counts.tenants, self.tenant);
        if let Some(c) = self.connection {
            decrement(&mut counts.connections, c);
        }
    }
}

fn or_unlimited(n: usize) -> usize {
    if n == 0 { usize::MAX } else { n }
}

impl Admission {
    /// With a meter, exports `calloutcome_in_flight_requests` and
    /// `calloutcome_shed_requests` (by method, tenant — `known` ones, else `other` — and
    /// the limit that refused).
    pub fn new(
        limits: AdmissionLimits,
        known: impl IntoIterator<Item = String>,
        meter: Option<&Meter>,
    ) -> Arc<Admission> {
        Arc::new_cyclic(|weak: &std::sync::Weak<Admission>| {
            let instruments = meter.map(|m| {
                let observed = weak.clone();
                Instruments {
                    shed: m
                        .u64_counter("calloutcome_shed_requests")
                        .with_description(
                            "Requests answered UNAVAILABLE unprocessed because a server.max_in_flight limit was reached, by RPC method, tenant (configured tenants only; others are `other`) and limit (server, tenant, connection).",
                        )
                        .build(),
                    _in_flight: m
                        .u64_observable_gauge("calloutcome_in_flight_requests")
                        .with_description(
                            "Public-service requests being handled now (streams only while they open).",
                        )
                        .with_callback(move |o| {
                            if let Some(a) = observed.upgrade() {
                                o.observe(a.in_flight() as u64, &[]);
                            }
                        })
                        .build(),
                }
            });
            Admission {
                limits: AdmissionLimits {
                    max_in_flight: or_unlimited(limits.max_in_flight),
                    per_tenant: or_unlimited(limits.per_tenant),
                    per_connection: or_unlimited(limits.per_connection),
                },
                counts: Mutex::default(),
                hasher: foldhash::fast::FixedState::default(),
                known: known.into_iter().collect(),
                instruments,
            }
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.counts.lock().total
    }

    /// Takes a slot for `tenant` on `connection`, or says which limit is full (and
    /// counts the shed request under `rpc`).
    pub fn admit(
        self: &Arc<Self>,
        rpc: &'static str,
        tenant: &Tenant,
        connection: Option<ConnectionId>,
    ) -> Result<Slot, Shed> {
        let tenant_key = self.hasher.hash_one(tenant.as_str());
        let connection = connection.map(|c| c.0);
        let refused = {
            let mut counts = self.counts.lock();
            let by_tenant = counts.tenants.get(&tenant_key).copied().unwrap_or(0);
            let by_connection = connection
                .and_then(|c| counts.connections.get(&c).copied())
                .unwrap_or(0);
            // The narrowest limit is named first: it is the one the caller can act on.
            if by_connection >= self.limits.per_connection {
                Some(Shed {
                    scope: ShedScope::Connection,
                    limit: self.limits.per_connection,
                })
            } else if by_tenant >= self.limits.per_tenant {
                Some(Shed {
                    scope: ShedScope::Tenant,
                    limit: self.limits.per_tenant,
                })
            } else if counts.total >= self.limits.max_in_flight {
                Some(Shed {
                    scope: ShedScope::Server,
                    limit: self.limits.max_in_flight,
                })
            } else {
                counts.total += 1;
                *counts.tenants.entry(tenant_key).or_default() += 1;
                if let Some(c) = connection {
                    *counts.connections.entry(c).or_default() += 1;
                }
                None
            }
        };
        match refused {
            None => Ok(Slot {
                admission: Arc::clone(self),
                tenant: tenant_key,
                connection,
            }),
            Some(shed) => {
                let label = if self.known.contains(tenant.as_str()) {
                    tenant.as_str()
                } else {
                    "other"
                };
                if let Some(i) = &self.instruments {
                    i.shed.add(
                        1,
                        &[
                            KeyValue::new("rpc_method", rpc),
                            KeyValue::new("tenant", label.to_owned()),
                            KeyValue::new("limit", shed.scope.as_str()),
                        ],
                    );
                }
                tracing::debug!(rpc, tenant = %tenant, limit = shed.scope.as_str(), max = shed.limit, "request shed");
                Err(shed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant::parse(name, 64).expect("tenant")
    }

    fn limits(max: usize, per_tenant: usize, per_connection: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_in_flight: max,
            per_tenant,
            per_connection,
        }
    }

    #[test]
    fn a_tenant_never_holds_more_than_its_share_and_others_still_get_in() {
        let a = Admission::new(limits(4, 2, 0), [], None);
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let held: Vec<Slot> = (0..2)
            .map(|i| {
                a.admit("ReportOutcome", &acme, Some(ConnectionId(i)))
                    .expect("in")
            })
            .collect();
        let shed = a
            .admit("ReportOutcome", &acme, Some(ConnectionId(9)))
            .expect_err("acme is at its share");
        assert_eq!(shed.scope, ShedScope::Tenant);
        let g1 = a
            .admit("ReportOutcome", &globex, None)
            .expect("globex gets in");
        let g2 = a
            .admit("ReportOutcome", &globex, None)
            .expect("globex gets in");
        assert_eq!(a.in_flight(), 4);
        let shed = a
            .admit("Classify", &tenant("initech"), None)
            .expect_err("the server is full");
        assert_eq!(shed.scope, ShedScope::Server);
        drop(held);
        drop((g1, g2));
        assert_eq!(a.in_flight(), 0);
        assert!(
            a.counts.lock().tenants.is_empty(),
            "no entry outlives its slots"
        );
    }

    #[test]
    fn a_connection_never_holds_more_than_its_share() {
        let a = Admission::new(limits(100, 100, 2), [], None);
        let acme = tenant("acme");
        let one = ConnectionId(1);
        let _x = a.admit("ReportOutcome", &acme, Some(one)).expect("in");
        let _y = a.admit("ReportOutcome", &acme, Some(one)).expect("in");
        let shed = a
            .admit("ReportOutcome", &acme, Some(one))
            .expect_err("full");
        assert_eq!(shed.scope, ShedScope::Connection);
        assert_eq!(shed.limit, 2);
        // The same tenant on another connection is served.
        let _z = a
            .admit("ReportOutcome", &acme, Some(ConnectionId(2)))
            .expect("another connection");
    }

    #[test]
    fn zero_means_no_limit() {
        let a = Admission::new(limits(0, 0, 0), [], None);
        let acme = tenant("acme");
        let slots: Vec<Slot> = (0..10_000)
            .map(|_| {
                a.admit("Classify", &acme, Some(ConnectionId(1)))
                    .expect("in")
            })
            .collect();
        assert_eq!(a.in_flight(), 10_000);
        drop(slots);
        assert_eq!(a.in_flight(), 0);
    }
}
