//! Serves a warp filter on a listener that the caller bound.
//!
//! bankgate runs its own accept loop rather than `warp::serve` for three reasons: no client
//! may hold a connection open without sending requests or without reading the answers, nor
//! more connections than the listener's cap, nor more than its share from one address
//! (`connection.rs`; the cap keeps file descriptors for the other listeners),
//! every connection can be torn down at once (the sandbox's `refuse` fault closes a provider's listener *and* its open
//! connections, as a network failure would), and the caller's socket address reaches the
//! handlers (per-IP limits) through the `ClientAddr` request extension. Request ids are
//! assigned here too, once per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};
use warp::{Filter, Reply};

use super::connection::{Activity, TimedBody, WriteDeadline};
use super::{ApiError, ErrorCode};
use bankgate_actors::metrics::HTTP_CONNECTIONS_REFUSED;

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A connection that has not sent a request's head by then is closed (slow-loris), and so
    /// is one that has sent nothing, or only part of the HTTP/2 preface.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long after its last one is closed
    /// (HTTP/2 gracefully, with a GOAWAY).
    pub idle_timeout: Duration,
    /// A request whose body has not arrived in full this long after its head fails (400).
    pub body_read_timeout: Duration,
    /// HTTP/2 pings a silent peer this often, and drops it when a ping goes unanswered.
    pub keep_alive_interval: Duration,
    /// Connections held at once; past it a new connection is closed as soon as accepted, so
    /// that a flood on one listener cannot take the file descriptors another one needs.
    pub max_connections: usize,
    /// Connections held at once from one peer address; past it that peer's new connection
    /// is closed as soon as accepted, so that one client cannot take the listener's cap.
    pub max_connections_per_peer: usize,
    /// A write the peer does not take for this long fails and closes the connection: a
    /// client that stops reading cannot hold its connection.
    pub write_timeout: Duration,
    /// After the stop signal, in-flight requests get this long to finish before their
    /// connections are closed. Zero closes them at once.
    pub drain: Duration,
}

impl ServeOptions {
    /// A listener's options with `header_read_timeout` and `drain`, and for the rest what an
    /// internal listener (the sandbox's, a test's) needs.
    pub const fn new(header_read_timeout: Duration, drain: Duration) -> ServeOptions {
        ServeOptions {
            header_read_timeout,
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: header_read_timeout,
            keep_alive_interval: Duration::from_secs(20),
            max_connections: 10_000,
            max_connections_per_peer: 10_000,
            write_timeout: Duration::from_secs(60),
            drain,
        }
    }
}

/// Serves `filter` on `listener` until `stop` resolves, then closes the listener, drains the
/// open connections for at most `options.drain` and closes whatever is left.
///
/// A failed accept (out of file descriptors, say) is logged and retried after a pause: the
/// connections already open keep being served.
pub async fn serve<F, R>(
    listener: TcpListener,
    filter: F,
    options: ServeOptions,
    stop: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let port = listener
        .local_addr()
        .map(|addr| addr.port().to_string())
        .unwrap_or_default();
    let (draining, drain_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    let peers = Peers::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() >= options.max_connections => {
                    ::metrics::counter!(HTTP_CONNECTIONS_REFUSED, "port" => port.clone(), "reason" => "listener_full").increment(1);
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let Some(slot) = peers.admit(peer.ip(), options.max_connections_per_peer) else {
                        ::metrics::counter!(HTTP_CONNECTIONS_REFUSED, "port" => port.clone(), "reason" => "peer_full").increment(1);
                        drop(stream);
                        continue;
                    };
                    let activity = Activity::new();
                    let service = TowerToHyperService::new(AtTheEdge {
                        inner: warp::service(filter.clone()),
                        peer: ClientAddr(peer),
                        activity: activity.clone(),
                        body_read_timeout: options.body_read_timeout,
                    });
                    let mut draining = drain_signal.clone();
                    connections.spawn(async move {
                        let _slot = slot;
                        let builder = builder(options);
                        let stream = WriteDeadline::new(stream, options.write_timeout);
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let mut connection = std::pin::pin!(connection);
                        let mut closing = false;
                        let idle = (options.header_read_timeout, options.idle_timeout);
                        loop {
                            tokio::select! {
                                result = connection.as_mut() => {
                                    if let Err(error) = result {
                                        debug!(error = %error, "connection ended with an error");
                                    }
                                    return;
                                }
                                () = activity.idle_for(idle.0, idle.1), if !closing => {
                                    debug!("closing an idle connection");
                                    connection.as_mut().graceful_shutdown();
                                    closing = true;
                                }
                                Ok(_) = draining.wait_for(|draining| *draining), if !closing => {
                                    connection.as_mut().graceful_shutdown();
                                    closing = true;
                                }
                            }
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
    let _ = draining.send(true);
    if !options.drain.is_zero() {
        let _ = tokio::time::timeout(options.drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
    }
    connections.shutdown().await;
}

/// The connections a listener holds per peer address.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Peers {
    /// A slot for one more connection from `ip`, unless it holds `max` already; the slot is
    /// given back when dropped.
    fn admit(&self, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = held.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its peer's count.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = (self.peers.0.lock()).unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// hyper's connection builder: HTTP/1 with the header read timeout, HTTP/2 with keep-alive
/// pings. Idle connections of either are closed by the caller (`connection.rs`).
fn builder(options: ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_interval);
    builder
}

/// Tower middleware that stamps every request at the edge: the connection's peer address,
/// and an `x-request-id` (the caller's when sane, else a fresh one) that every filter and the
/// response then share. It counts the request in flight on its connection until answered, and
/// gives its body the body read deadline.
#[derive(Clone)]
struct AtTheEdge<S> {
    inner: S,
    peer: ClientAddr,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for AtTheEdge<S>
where
    S: tower_service::Service<warp::http::Request<TimedBody<B>>, Response = warp::reply::Response>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: warp::http::Request<B>) -> Self::Future {
        let in_flight = self.activity.request();
        let within = self.body_read_timeout;
        let broken = Arc::new(AtomicBool::new(false));
        let mut request = request.map(|body| TimedBody::new(body, within, broken.clone()));
        request.extensions_mut().insert(self.peer);
        super::request_id::assign(request.headers_mut());
        let request_id = request.headers().get(&super::request_id::HEADER).cloned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut answer = answer.await;
            drop(in_flight);
            if broken.load(Ordering::Acquire) {
                let mut refused = ApiError::new(
                    ErrorCode::BadRequest,
                    "the request body was not received in full (too slow, broken off or malformed)",
                )
                .into_response();
                if let Some(id) = request_id {
                    refused.headers_mut().insert(super::request_id::HEADER, id);
                }
                answer = Ok(refused);
            }
            answer
        })
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
