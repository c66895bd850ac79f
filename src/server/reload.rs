//! Policy hot reload: on SIGHUP the configured policy file is read and validated whole,
//! then swapped into the pipeline atomically; an invalid file keeps the live policy and
//! is logged with its file:line. Decisions carry the version that made them
//! (`Decision.policy_version`), and `calloutcome_policy_info{version}` shows the live one.
//!
//! Owns the signal loop and the reload metrics; parsing is `config::load_policy`, the
//! swap is `Pipeline::replace_policy`. It does not watch the file (yet): send SIGHUP
//! after changing it.

use super::shutdown::Shutdown;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::telemetry::Metrics;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use std::sync::Arc;

/// The reload metrics, registered for as long as the server runs.
pub struct PolicyMetrics {
    reloads: Counter<u64>,
    _info: ObservableGauge<u64>,
}

impl PolicyMetrics {
    pub fn new(metrics: &Metrics, pipeline: &Pipeline) -> PolicyMetrics {
        let meter = metrics.meter();
        let live = pipeline.clone();
        PolicyMetrics {
            reloads: meter
                .u64_counter("calloutcome_policy_reloads")
                .with_description(
                    "Policy reloads by result: applied (a new version is live), unchanged (the same text), rejected (invalid; the previous policy stays).",
                )
                .build(),
            _info: meter
                .u64_observable_gauge("calloutcome_policy_info")
                .with_description("The live handling policy: `version` is what decisions carry as policy_version (the first 12 hex digits of the SHA-256 of the policy file).")
                .with_callback(move |o| {
                    o.observe(1, &[KeyValue::new("version", live.policy().version().to_owned())]);
                })
                .build(),
        }
    }

    fn count(&self, result: &'static str) {
        self.reloads.add(1, &[KeyValue::new("result", result)]);
    }
}

/// What one reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected,
}

/// Reads the configured policy and makes it live when it is valid and new.
pub fn reload(config: &Config, pipeline: &Pipeline, metrics: &PolicyMetrics) -> Reload {
    let result = match config.policy() {
        Err(error) => {
            tracing::warn!(%error, "policy not reloaded: the previous one stays in use");
            Reload::Rejected
        }
        Ok(policy) if policy.version() == pipeline.policy().version() => {
            tracing::info!(version = policy.version(), "policy unchanged");
            Reload::Unchanged
        }
        Ok(policy) => {
            let version = policy.version().to_owned();
            pipeline.replace_policy(Arc::new(policy));
            tracing::info!(%version, "policy reloaded");
            Reload::Applied
        }
    };
    metrics.count(match result {
        Reload::Applied => "applied",
        Reload::Unchanged => "unchanged",
        Reload::Rejected => "rejected",
    });
    result
}

/// Reloads on every SIGHUP until the drain starts.
pub fn spawn_on_sighup(
    config: Config,
    pipeline: Pipeline,
    metrics: Arc<PolicyMetrics>,
    shutdown: &Shutdown,
) {
    #[cfg(unix)]
    {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP: no policy reload");
                    return;
                }
            };
        let stop = shutdown.streams.clone();
        shutdown.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    received = hangups.recv() => if received.is_none() { break },
                }
                let (config, pipeline, metrics) =
                    (config.clone(), pipeline.clone(), Arc::clone(&metrics));
                // The file is read off the runtime's threads.
                let _ =
                    tokio::task::spawn_blocking(move || reload(&config, &pipeline, &metrics)).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config, pipeline, metrics, shutdown);
}
