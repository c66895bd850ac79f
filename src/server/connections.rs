//! The connection loop of every listener (public gRPC, admin HTTP): accept, serve each
//! connection with hyper, and keep connection hygiene.
//!
//! Owns what a connection may cost, whatever protocol runs on it:
//! - **a cap** (`max_connections`): one over it is closed at once (the client sees a
//!   reset and retries with backoff) with a warning, at most one every few seconds, that
//!   says which listener refused and how many;
//! - **a handshake timeout**: a connection must send the 24 bytes of the HTTP/2 preface
//!   (or the start of an HTTP/1.1 request) within `handshake_timeout`, else it is closed;
//!   HTTP/1.1 request headers must arrive within it too (hyper's header-read timeout);
//! - **an idle timeout**: a connection with no request open for `idle_timeout` is closed
//!   gracefully (HTTP/2 GOAWAY; clients reconnect when they next need to);
//! - **`accept` errors** (out of file descriptors and the like) back off from 10 ms up to
//!   1 s and are logged, never spun on and never fatal;
//! - **shutdown**: on `stop`, accepting ends (the socket closes) and every connection is
//!   asked to finish gracefully; dropping the future closes them all at once.
//!
//! Each request gets a [`ConnectionId`] and the transport's connect info (tonic's
//! `Connected`: peer address, TLS peer) in its extensions. It does not look at requests
//! otherwise: what they may do is the services' and the layers' business.

use crate::admission::ConnectionId;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::server::Connected;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is 24 bytes.
const PREFACE_BYTES: usize = 24;
/// At most one "limit reached" or "accept failed" warning per listener this often.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Connection ids are unique in the process (across listeners).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// For logs: `public`, `admin`.
    pub listener: &'static str,
    /// Most connections open at once; over it, new ones are closed at once.
    pub max_connections: usize,
    /// Time for a new connection to send its HTTP/2 preface or HTTP/1.1 request headers.
    pub handshake_timeout: Duration,
    /// A connection with no request open this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 only (gRPC), or HTTP/1.1 and HTTP/2 (admin).
    pub http2_only: bool,
    pub http2_keepalive_interval: Option<Duration>,
    pub http2_keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
}

/// Rate-limited warnings: the first at once, then one per [`WARN_EVERY`] with a count.
#[derive(Debug, Default)]
struct Warn {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warn {
    /// Whether to log now, and how many were not logged since the last time.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accepted TCP connections of `listener` (nodelay on). Accept errors back off and are
/// logged; the listener closes when the stream is dropped.
pub fn tcp_incoming(
    listener: TcpListener,
    name: &'static str,
) -> impl Stream<Item = TcpStream> + Send {
    async_stream::stream! {
        let mut warn = Warn::default();
        let mut backoff = Duration::from_millis(10);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let _ = stream.set_nodelay(true);
                    yield stream;
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if let Some(more) = warn.due() {
                        tracing::warn!(
                            listener = name, error = %e, retry_in = ?backoff, also_failed = more,
                            "accept failed (out of file descriptors?); backing off"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Errors of one connection (the peer went away before the accept): not the listener's.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves the connections of `incoming` with `service` until `stop`, then until the
/// last connection has closed. Dropping the future closes every connection.
pub async fn serve<I, IO, S, B>(
    incoming: I,
    service: S,
    settings: ConnectionSettings,
    stop: CancellationToken,
) where
    I: Stream<Item = IO> + Send,
    IO: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if settings.http2_only {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keepalive_interval)
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.handshake_timeout);
    let settings = Arc::new(settings);
    let mut connections = JoinSet::new();
    let mut refused = Warn::default();
    {
        let mut incoming = pin!(incoming);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                io = tokio_stream::StreamExt::next(&mut incoming) => {
                    let Some(io) = io else { break };
                    if connections.len() >= settings.max_connections {
                        drop(io);
                        if let Some(more) = refused.due() {
                            tracing::warn!(
                                listener = settings.listener,
                                max_connections = settings.max_connections,
                                also_refused = more,
                                "connection limit reached: closing new connections until some end"
                            );
                        }
                        continue;
                    }
                    let connection = Connection {
                        id: ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)),
                        activity: Arc::new(Activity::default()),
                    };
                    connections.spawn(connection.run(
                        io,
                        service.clone(),
                        builder.clone(),
                        Arc::clone(&settings),
                        stop.clone(),
                    ));
                }
            }
        }
        // `incoming` drops here: the listening socket closes before the drain.
    }
    while connections.join_next().await.is_some() {}
}

/// Counts the requests open on a connection (until their response body ends).
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    changed: Notify,
}

impl Activity {
    fn start(self: &Arc<Self>) -> Active {
        if self.open.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_waiters();
        }
        Active(Arc::clone(self))
    }

    /// Returns once no request has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                if tokio::time::timeout(timeout, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One open request; closed when dropped.
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

struct Connection {
    id: ConnectionId,
    activity: Arc<Activity>,
}

impl Connection {
    async fn run<IO, S, B>(
        self,
        io: IO,
        service: S,
        builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
        settings: Arc<ConnectionSettings>,
        stop: CancellationToken,
    ) where
        IO: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = PerConnection {
            inner: service,
            id: self.id,
            info: io.connect_info(),
            activity: Arc::clone(&self.activity),
        };
        let io = Handshake::new(io, settings.handshake_timeout);
        let mut conn =
            pin!(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)));
        let idle = self.activity.idle_for(settings.idle_timeout);
        let mut idle = pin!(idle);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(listener = settings.listener, connection = self.id.0, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = &mut idle, if !closing => {
                    tracing::debug!(listener = settings.listener, connection = self.id.0, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = stop.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The service of one connection: puts the connection's id and info in each request
/// and counts it open until its response body ends.
#[derive(Clone)]
struct PerConnection<S, C> {
    inner: S,
    id: ConnectionId,
    info: C,
    activity: Arc<Activity>,
}

impl<S, C, B> tower::Service<http::Request<Incoming>> for PerConnection<S, C>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>,
    C: Clone + Send + Sync + 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Incoming>) -> Self::Future {
        let active = self.activity.start();
        request.extensions_mut().insert(self.id);
        request.extensions_mut().insert(self.info.clone());
        TrackedFuture {
            inner: self.inner.call(request),
            active: Some(active),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`PerConnection`], its body carrying the request's [`Active`].
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        active: Option<Active>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let active = this.active.take();
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _active: active,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request open until it ends or is dropped.
    struct Tracked<B> {
        #[pin]
        body: B,
        _active: Option<Active>,
    }
}

impl<B: HttpBody> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's transport, failing its reads when the first [`PREFACE_BYTES`] have
/// not arrived within the handshake timeout.
struct Handshake<IO> {
    io: IO,
    missing: usize,
    deadline: Pin<Box<Sleep>>,
}

impl<IO> Handshake<IO> {
    fn new(io: IO, timeout: Duration) -> Self {
        Handshake {
            io,
            missing: PREFACE_BYTES,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Handshake<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.missing == 0 {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) => {
                this.missing = this.missing.saturating_sub(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface or HTTP/1.1 request within the handshake timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Handshake<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_the_last_request_closed_for_the_timeout() {
        let activity = Arc::new(Activity::default());
        let open = activity.start();
        let idle = tokio::spawn({
            let a = Arc::clone(&activity);
            async move { a.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished(), "a request is open");
        drop(open);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!idle.is_finished(), "idle for 5 s only");
        let again = activity.start();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!idle.is_finished(), "open again");
        drop(again);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(idle.is_finished());
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skipped() {
        let mut w = Warn::default();
        assert_eq!(w.due(), Some(0));
        assert_eq!(w.due(), None);
        assert_eq!(w.due(), None);
        w.last = w.last.and_then(|l| l.checked_sub(WARN_EVERY));
        assert_eq!(w.due(), Some(2));
    }
}
