//! Policy hot reload: on SIGHUP, and when the policy file changes, the configured file is
//! read and validated whole, then swapped into the pipeline atomically; an invalid file
//! keeps the live policy and is logged with its file:line. Decisions carry the version
//! that made them (`Decision.policy_version`), and `calloutcome_policy_info{version}`
//! shows the live one.
//!
//! Owns the triggers (the signal loop, the file watcher), the reload metrics and the
//! [`ReloadStatus`] tests and embedders wait on; parsing is `Policy::parse`, the swap is
//! `Pipeline::replace_policy`.
//!
//! Why the folder is watched and not the file: Kubernetes updates a mounted ConfigMap
//! by writing a new timestamped folder and renaming the `..data` symlink onto it, so
//! `policy.toml` (a symlink through `..data`) changes content without an event of its
//! own; editors save by renaming a temporary file over the old one. Both are events in
//! the folder. Every burst of events is settled for [`SETTLE`], then the file is read;
//! a text already seen (by its content hash) changes nothing, so unrelated files in the
//! folder cost one read and are not counted as reloads.

use super::shutdown::Shutdown;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::policy::{Policy, version_of};
use crate::telemetry::Metrics;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a burst of file events must be quiet before the file is read: a writer
/// that truncates and then writes is read once, whole.
const SETTLE: Duration = Duration::from_millis(200);
/// Polling interval of the fallback watcher (where inotify is unavailable or exhausted).
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The reload metrics, registered for as long as the server runs.
pub struct PolicyMetrics {
    reloads: Counter<u64>,
    _info: ObservableGauge<u64>,
}

impl PolicyMetrics {
    pub fn new(metrics: &Metrics, pipeline: &Pipeline) -> PolicyMetrics {
        let meter = metrics.meter();
        let live = pipeline.clone();
        let reloads = meter
            .u64_counter("calloutcome_policy_reloads")
            .with_description(
                "Policy reloads by result: applied (a new version is live), unchanged (the same text), rejected (invalid; the previous policy stays).",
            )
            .build();
        // At 0 from the start, so that an alert on rejections sees 0, not nothing.
        for result in ["applied", "unchanged", "rejected"] {
            reloads.add(0, &[KeyValue::new("result", result)]);
        }
        PolicyMetrics {
            reloads,
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

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: always reads, validates and reports, even an unchanged file.
    Signal,
    /// The watcher: acts only on a text it has not seen yet.
    FileChanged,
}

/// The live policy and the reloads so far, for whoever waits on a reload (tests,
/// embedders): [`crate::server::RunningServer::policy_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    /// The live policy's version.
    pub version: Arc<str>,
    pub applied: u64,
    pub rejected: u64,
    /// The last rejection's message (file:line:column for a policy error).
    pub last_error: Option<String>,
}

/// Reloads the configured policy into the pipeline.
pub struct Reloader {
    config: Config,
    pipeline: Pipeline,
    metrics: PolicyMetrics,
    /// The version of the text read last, valid or not.
    seen: parking_lot::Mutex<Arc<str>>,
    status: watch::Sender<ReloadStatus>,
}

impl ReloadStatus {
    /// The status before any reload: the pipeline's policy.
    pub fn of(pipeline: &Pipeline) -> ReloadStatus {
        ReloadStatus {
            version: pipeline.policy().version().into(),
            applied: 0,
            rejected: 0,
            last_error: None,
        }
    }
}

impl Reloader {
    /// Reports reloads on `status` (made with [`ReloadStatus::of`]).
    pub fn new(
        config: Config,
        pipeline: Pipeline,
        metrics: PolicyMetrics,
        status: watch::Sender<ReloadStatus>,
    ) -> Reloader {
        let version: Arc<str> = pipeline.policy().version().into();
        Reloader {
            config,
            pipeline,
            metrics,
            seen: parking_lot::Mutex::new(version),
            status,
        }
    }

    /// Reads the policy and makes it live when it is valid and new. `None`: the watcher
    /// saw nothing new (no reload happened, nothing is counted). Blocking file I/O: call
    /// it off the runtime's threads.
    pub fn reload(&self, trigger: Trigger) -> Option<Reload> {
        let result = match &self.config.policy_file {
            // The built-in policy never changes.
            None => Reload::Unchanged,
            Some(path) => match std::fs::read_to_string(path) {
                // Between an editor's delete and create: the create event follows.
                Err(e)
                    if trigger == Trigger::FileChanged
                        && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::debug!(path = %path.display(), "policy file absent for now");
                    return None;
                }
                Err(e) => self.reject(format!("cannot read {}: {e}", path.display())),
                Ok(text) => {
                    let version = version_of(&text);
                    {
                        let mut seen = self.seen.lock();
                        if trigger == Trigger::FileChanged && *seen == version {
                            return None;
                        }
                        *seen = Arc::clone(&version);
                    }
                    if version.as_ref() == self.pipeline.policy().version() {
                        tracing::info!(%version, "policy unchanged");
                        Reload::Unchanged
                    } else {
                        match Policy::parse(&text, &path.display().to_string()) {
                            Err(e) => self.reject(e.to_string()),
                            Ok(policy) => self.apply(policy),
                        }
                    }
                }
            },
        };
        self.metrics.count(match result {
            Reload::Applied => "applied",
            Reload::Unchanged => "unchanged",
            Reload::Rejected => "rejected",
        });
        Some(result)
    }

    fn reject(&self, error: String) -> Reload {
        tracing::warn!(%error, "policy not reloaded: the previous one stays in use");
        self.status.send_modify(|s| {
            s.rejected += 1;
            s.last_error = Some(error);
        });
        Reload::Rejected
    }

    fn apply(&self, policy: Policy) -> Reload {
        let version: Arc<str> = policy.version().into();
        self.pipeline.replace_policy(Arc::new(policy));
        tracing::info!(%version, "policy reloaded");
        self.status.send_modify(|s| {
            s.version = version;
            s.applied += 1;
        });
        Reload::Applied
    }
}

/// Runs a reload on a blocking thread.
async fn reload_off_runtime(reloader: &Arc<Reloader>, trigger: Trigger) {
    let reloader = Arc::clone(reloader);
    let _ = tokio::task::spawn_blocking(move || reloader.reload(trigger)).await;
}

/// Reloads on every SIGHUP until the drain starts.
pub fn spawn_on_sighup(reloader: Arc<Reloader>, shutdown: &Shutdown) {
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
                reload_off_runtime(&reloader, Trigger::Signal).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (reloader, shutdown);
}

/// Watches the policy file's folder and reloads when the file's text changes, until the
/// drain starts. Without a policy file, or with `policy_watch = false`, does nothing.
pub fn spawn_watcher(reloader: Arc<Reloader>, shutdown: &Shutdown) {
    let Some(path) = reloader
        .config
        .policy_file
        .clone()
        .filter(|_| reloader.config.policy_watch)
    else {
        return;
    };
    let (events, mut changes) = mpsc::unbounded_channel::<()>();
    let Some(watcher) = watch_folder(&path, events) else {
        return;
    };
    let stop = shutdown.streams.clone();
    shutdown.tasks.spawn(async move {
        // Dropping the watcher stops it: it lives as long as this task.
        let _watcher = watcher;
        // A change made between the policy's first read and the watch would otherwise
        // wait for the next event: look once now (a text already seen costs one read).
        reload_off_runtime(&reloader, Trigger::FileChanged).await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = changes.recv() => if event.is_none() { break },
            }
            // Settle: wait until the folder has been quiet for SETTLE.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
            reload_off_runtime(&reloader, Trigger::FileChanged).await;
        }
    });
}

/// Either kind of notify watcher, only kept alive (dropping it stops it) by the task
/// that owns it.
type FolderWatcher = Box<dyn std::any::Any + Send>;

/// Starts a watcher on the folder of `path` that sends `()` on every event there; the
/// polling watcher on the file itself when the native one cannot start.
fn watch_folder(path: &Path, events: mpsc::UnboundedSender<()>) -> Option<FolderWatcher> {
    use notify::{RecursiveMode, Watcher};
    let folder: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let sender = events.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = sender.send(());
        }
    };
    let native = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&folder, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match native {
        Ok(w) => {
            tracing::info!(folder = %folder.display(), "watching the policy file for changes");
            return Some(Box::new(w));
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                folder = %folder.display(),
                "cannot watch the policy folder; polling the file every {}s instead",
                POLL_INTERVAL.as_secs()
            );
        }
    }
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events.send(());
        }
    };
    let config = notify::Config::default()
        .with_poll_interval(POLL_INTERVAL)
        .with_compare_contents(true)
        .with_follow_symlinks(true);
    match notify::PollWatcher::new(handler, config).and_then(|mut w| {
        w.watch(path, RecursiveMode::NonRecursive)?;
        Ok(w)
    }) {
        Ok(w) => Some(Box::new(w)),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot watch the policy file: reload it with SIGHUP");
            None
        }
    }
}
