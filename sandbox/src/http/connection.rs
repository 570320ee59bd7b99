//! What one connection may hold: how long it may stay without a request, how long a
//! request's body may take to arrive, and how long a response may wait for the peer to read.
//!
//! hyper closes an HTTP/1 connection whose request head does not arrive within the header read
//! timeout, but only once it knows the connection speaks HTTP/1: a connection that sends
//! nothing, or part of the HTTP/2 preface, waits in version detection without a timer, and an
//! HTTP/2 connection has no idle timeout at all. `Activity` is the one rule for both: a
//! connection with no request in flight is closed (gracefully: HTTP/2 gets a GOAWAY) once it
//! has been idle for the header read timeout before its first request, or for the idle timeout
//! after it. `TimedBody` fails a request body that has not arrived in full by its deadline,
//! and the request is answered 400 (a broken body is the client's fault, never a 500).
//! `WriteDeadline` fails a write the peer does not take within the write timeout: a request
//! counts as in flight only until its handler returns, and hyper finishes writing its answer
//! even after a graceful shutdown, so a client that stops reading (pipelining requests it
//! never reads the answers to) would otherwise hold its connection for ever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The requests of one connection: how many are in flight and when the last one ended.
pub(super) struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Whether a request has come yet.
    served: AtomicBool,
    /// Milliseconds after `started` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// Counts a request in until the returned guard is dropped.
    pub(super) fn request(self: &Arc<Activity>) -> InFlight {
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `first` (before any
    /// request came) or `idle` (after one did).
    pub(super) async fn idle_for(&self, first: Duration, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let limit = if self.served.load(Ordering::Relaxed) {
                idle
            } else {
                first
            };
            let since =
                self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            tokio::select! {
                () = tokio::time::sleep_until(since + limit) => {
                    if self.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }
}

/// A request in flight on its connection; dropping it marks the end.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.started.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(now, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
    }
}

/// A request body that must arrive in full within its deadline; past it, reading fails. A
/// body that fails to be read, by its deadline or broken off or malformed, is noted in
/// `broken`, so that the request is answered 400 whatever the handler made of the error.
pub struct TimedBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    broken: Arc<AtomicBool>,
}

impl<B> TimedBody<B> {
    pub(super) fn new(inner: B, within: Duration, broken: Arc<AtomicBool>) -> TimedBody<B> {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
            broken,
        }
    }
}

/// The error a body read past its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyTimedOut;

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut) as Self::Error))),
                Poll::Pending => Poll::Pending,
            },
        };
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.broken.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket whose writes must make progress: a write, flush or shutdown that
/// the peer does not let through within `within` fails with `TimedOut`, and hyper then
/// closes the connection. The clock runs only while a write is stalled.
pub(super) struct WriteDeadline<S> {
    inner: S,
    within: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(super) fn new(inner: S, within: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            within,
            stalled: None,
        }
    }

    /// What a write that made no progress answers: still pending, or past the deadline.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let within = self.within;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer did not read the response within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        polled: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that reads nothing stalls the writes to it: past the deadline they fail, while
    /// a peer that reads keeps the writes going however long they take in all.
    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_past_the_deadline() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_millis(200));
        let chunk = [b'x'; 512];
        let reader = tokio::spawn(async move {
            let (mut buffer, mut read) = ([0; 512], 0);
            while read < 16 * chunk.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                read += theirs.read(&mut buffer).await.unwrap();
            }
            theirs
        });
        // 512 bytes each 20 ms: over 300 ms in all, no single stall past 200 ms.
        for _ in 0..16 {
            ours.write_all(&chunk)
                .await
                .expect("the peer reads, slowly");
        }
        let _theirs = reader.await.unwrap();
        // Now the peer reads nothing: the buffer fills and the next write times out.
        let started = Instant::now();
        let mut failed = None;
        for _ in 0..8 {
            if let Err(error) = ours.write_all(&chunk).await {
                failed = Some(error.kind());
                break;
            }
        }
        assert_eq!(failed, Some(std::io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let first = Duration::from_secs(2);
        let idle = Duration::from_secs(60);
        let activity = Activity::new();
        let started = Instant::now();
        // Nothing ever came: idle after `first`.
        activity.idle_for(first, idle).await;
        assert_eq!(started.elapsed(), first);

        let activity = Activity::new();
        let request = activity.request();
        let waited = tokio::spawn({
            let activity = activity.clone();
            async move {
                let started = Instant::now();
                activity.idle_for(first, idle).await;
                started.elapsed()
            }
        });
        // A request held for ten minutes keeps it open; after it, `idle` counts.
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(request);
        assert_eq!(waited.await.unwrap(), Duration::from_secs(660));
    }
}
