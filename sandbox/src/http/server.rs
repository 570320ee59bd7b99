//! Serves a warp filter on a listener that the caller bound.
//!
//! bankgate runs its own accept loop rather than `warp::serve` for three reasons: a slow client
//! must not hold a connection open forever (the header read timeout), every connection can be
//! torn down at once (the sandbox's `refuse` fault closes a provider's listener *and* its open
//! connections, as a network failure would), and the caller's socket address reaches the
//! handlers (per-IP limits) through the `ClientAddr` request extension. Request ids are
//! assigned here too, once per request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};
use warp::{Filter, Reply};

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A client that has not sent its request headers by then is disconnected (slow-loris).
    pub header_read_timeout: Duration,
    /// After the stop signal, in-flight requests get this long to finish before their
    /// connections are closed. Zero closes them at once.
    pub drain: Duration,
}

/// Serves `filter` on `listener` until `stop` resolves, then closes the listener, drains the
/// open connections for at most `options.drain` and closes whatever is left.
pub async fn serve<F, R>(
    listener: TcpListener,
    filter: F,
    options: ServeOptions,
    stop: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = TowerToHyperService::new(WithClientAddr {
                        inner: warp::service(filter.clone()),
                        peer: ClientAddr(peer),
                    });
                    let watcher = graceful.watcher();
                    connections.spawn(async move {
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(options.header_read_timeout);
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(error) = watcher.watch(connection).await {
                            debug!(error = %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if !options.drain.is_zero() {
        let _ = tokio::time::timeout(options.drain, graceful.shutdown()).await;
    }
    connections.shutdown().await;
}

/// Tower middleware that stamps every request at the edge: the connection's peer address,
/// and an `x-request-id` (the caller's when sane, else a fresh one) that every filter and the
/// response then share.
#[derive(Clone)]
struct WithClientAddr<S> {
    inner: S,
    peer: ClientAddr,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithClientAddr<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: warp::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        super::request_id::assign(request.headers_mut());
        self.inner.call(request)
    }
}

/// Connections the kernel holds for the accept loop: a burst of clients (a reconnect storm
/// after a network blip) must not overflow the queue and wait out SYN retransmits. The kernel
/// caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener, naming the address in the error (a taken port is a common mistake).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(named)?;
    socket.set_reuseaddr(true).map_err(named)?;
    socket.bind(addr).map_err(named)?;
    socket.listen(LISTEN_BACKLOG).map_err(named)
}
