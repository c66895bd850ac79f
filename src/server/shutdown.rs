//! Shutdown as owned state: what a stop has to reach, in the order it reaches it.
//!
//! 1. health flips to NOT_SERVING (load balancers stop sending);
//! 2. [`Shutdown::streams`] is cancelled: every subscription ends with its last resume
//!    token, and background loops (rate-limit housekeeping, NATS health, TLS reload)
//!    stop at their next turn;
//! 3. the listener stops accepting and in-flight requests finish;
//! 4. the tracked tasks (report tasks of a networked backend, the loops above) are
//!    drained: a report that was acknowledged or is being written is never cut;
//! 5. whatever still runs at `shutdown_grace` is cut off, so the process always exits.
//!
//! Every task the server starts is spawned on [`Shutdown::tasks`]; none is aborted.

use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tokens and the task tracker of one server.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the drain starts: streams end, loops stop.
    pub streams: CancellationToken,
    /// Every background task of the server, drained before it returns.
    pub tasks: TaskTracker,
}

impl Shutdown {
    /// Waits for every tracked task until `deadline`; says whether all finished.
    pub async fn drain(&self, deadline: Instant) -> bool {
        self.streams.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.tasks.len(),
                "drain deadline passed with background tasks still running"
            );
        }
        drained
    }
}

/// At least this long is left for background tasks after the connections drained.
pub const MIN_TASK_DRAIN: Duration = Duration::from_millis(200);

/// Waits for SIGINT or SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
