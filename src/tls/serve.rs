//! TLS on the public port: the accept loop, handshakes off that loop, and reloading the
//! certificate files while serving.
//!
//! Owns the current `ServerConfig` (read by each new connection, swapped by a reload) and
//! the per-connection peer information tonic puts in the request extensions. It does not
//! authenticate requests: it only reports what a verified client certificate names.
//!
//! Reloading polls the files (every `reload_interval`) rather than watching them:
//! Kubernetes updates a mounted Secret by swapping a `..data` symlink, which file-watch
//! events on the file paths miss, and polling three small files works the same on every
//! filesystem with no dependency. A new set that does not load is logged and counted,
//! and the previous configuration keeps serving.

use super::{CertNames, TlsConfig, TlsError, TlsFiles};
use parking_lot::{Mutex, RwLock};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// Handshakes in flight at once; beyond this the accept loop waits (the handshake
/// timeout bounds how long a slot is held).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Reloads so far: tells operators (logs) and tests (a watch) that a reload happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// New file sets loaded and now used for new connections.
    pub reloads: u64,
    /// New file sets rejected (the previous configuration kept serving).
    pub failures: u64,
}

/// What the last look at the files found, so an unchanged set (good or bad) is not
/// reloaded or logged again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Files([u8; 32]),
    Unreadable(String),
}

/// The TLS side of the public listener.
#[derive(Debug)]
pub struct TlsServer {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    seen: Mutex<Seen>,
    status: watch::Sender<ReloadStatus>,
}

impl TlsServer {
    /// Loads the files; an error names the file at fault.
    pub fn new(config: TlsConfig) -> Result<Arc<TlsServer>, TlsError> {
        let files = TlsFiles::read(&config)?;
        let server = super::build(&config, &files)?;
        Ok(Arc::new(TlsServer {
            current: RwLock::new(server),
            seen: Mutex::new(Seen::Files(files.fingerprint())),
            status: watch::channel(ReloadStatus::default()).0,
            config,
        }))
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read())
    }

    /// Whether clients must present a certificate.
    pub fn client_cert_required(&self) -> bool {
        self.config.client_cert_required()
    }

    /// Follows reloads and failed reloads.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Looks at the files once: loads a changed set, keeps the current configuration when
    /// the new set is unreadable or invalid. Blocking file I/O.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = TlsFiles::read(&self.config);
        let seen = match &files {
            Ok(f) => Seen::Files(f.fingerprint()),
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        {
            let mut last = self.seen.lock();
            if *last == seen {
                return Ok(false);
            }
            *last = seen;
        }
        match files.and_then(|f| super::build(&self.config, &f)) {
            Ok(server) => {
                *self.current.write() = server;
                self.status.send_modify(|s| s.reloads += 1);
                tracing::info!(
                    cert = %self.config.cert_file.display(),
                    "tls: reloaded the certificate files; new connections use them"
                );
                Ok(true)
            }
            Err(e) => {
                self.status.send_modify(|s| s.failures += 1);
                tracing::error!(
                    error = %e,
                    "tls: the changed certificate files cannot be used; still serving the previous ones"
                );
                Err(e)
            }
        }
    }

    /// Re-reads the files every `reload_interval` until `stop`; `None` when reloading is
    /// off ("0s").
    pub fn spawn_reloader(
        self: &Arc<Self>,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        let every = self.config.reload_interval;
        if every.is_zero() {
            return;
        }
        let server = Arc::clone(self);
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the files were just loaded.
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let server = Arc::clone(&server);
                // Errors are logged and counted by `reload`.
                let _ = tokio::task::spawn_blocking(move || server.reload()).await;
            }
        });
    }

    /// Yields the connections of `accepted` (TCP, as the listener accepted them) once
    /// their TLS handshake has completed. Handshakes run in their own tasks under
    /// `handshake_timeout`, so a slow or silent client never holds up the next one, and
    /// at most [`MAX_PENDING_HANDSHAKES`] at once. Dropping the stream (the server stops
    /// accepting) stops the loop and drops `accepted` (closing the listener).
    pub fn incoming<A>(self: &Arc<Self>, accepted: A) -> ReceiverStream<TlsConn>
    where
        A: Stream<Item = TcpStream> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let server = Arc::clone(self);
        let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(async move {
            let mut accepted = std::pin::pin!(accepted);
            loop {
                let slot = tokio::select! {
                    () = tx.closed() => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                };
                let tcp = tokio::select! {
                    () = tx.closed() => break,
                    tcp = accepted.next() => match tcp {
                        Some(tcp) => tcp,
                        None => break,
                    },
                };
                let Ok(peer) = tcp.peer_addr() else {
                    continue;
                };
                let acceptor = TlsAcceptor::from(server.current());
                let timeout = server.config.handshake_timeout;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(TlsConn::new(stream, peer)).await;
                        }
                        // Scanners and misconfigured clients: not worth more than debug.
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Who is on the other end of a TLS connection; in each request's extensions.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote_addr: SocketAddr,
    /// The names of the client certificate, verified against the client CA during the
    /// handshake; `None` when the client sent none.
    pub client_cert: Option<Arc<CertNames>>,
}

/// A TLS connection after its handshake, with its peer read once.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl TlsConn {
    fn new(stream: TlsStream<TcpStream>, remote_addr: SocketAddr) -> TlsConn {
        let client_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| CertNames::from_der(leaf))
            .map(Arc::new);
        TlsConn {
            stream,
            peer: TlsPeer {
                remote_addr,
                client_cert,
            },
        }
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
