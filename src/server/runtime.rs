//! The Tokio runtime the service runs on.
//!
//! Owns the runtime's settings for every command of the binary. It starts nothing
//! itself. The benchmarks' bare server deliberately stays on Tokio's default runtime,
//! where it answers faster (benches/loadgen.rs says why).

/// The multi-threaded runtime of `call-outcome serve` (and of every other command),
/// with every driver on, and without Tokio's LIFO slot.
///
/// With the slot, a task woken by the running task runs next. Under load the task woken
/// is most often a connection's writer: HTTP/2's, woken by a response just finished, or
/// the NATS client's, woken by a request just queued. Run next, it finds one frame to
/// send and makes one `writev` of it. Without the slot it waits its turn behind the
/// tasks already ready, which queue theirs meanwhile, and sends them together: on one
/// core, `ReportOutcome` +6.8 % and `Classify` +6.4 % on the memory backend, and
/// `ReportOutcome` +38 % on NATS (docs/performance.md, "The runtime").
///
/// The setting belongs to Tokio's unstable API: it exists when the crate is built with
/// `--cfg tokio_unstable`, which `.cargo/config.toml` sets. A build without it (a
/// `RUSTFLAGS` variable replaces that file's flags) gets Tokio's default scheduling and
/// nothing else changes.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

#[cfg(test)]
mod tests {
    #[test]
    // A constant on purpose: a build without the flag fails this test, not every test
    // (a `const` assertion would stop the whole test build).
    #[allow(clippy::assertions_on_constants)]
    fn the_build_has_the_runtime_setting() {
        // Fails when the crate was built without `.cargo/config.toml`'s flags (RUSTFLAGS
        // set in the environment): the service would then run on Tokio's default
        // scheduling, slower under load than what docs/performance.md reports.
        assert!(
            cfg!(tokio_unstable),
            "built without `--cfg tokio_unstable`: add it to RUSTFLAGS"
        );
        let runtime = super::runtime().expect("runtime");
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }
}
