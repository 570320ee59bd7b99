//! A simulated provider's listener, which the `refuse` fault can close: while a `refuse`
//! fault is active for the provider, nothing listens on its port (connections are refused)
//! and its open connections are dropped, as when the network path to it fails. When the fault
//! ends, the listener opens again on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::ProviderId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use warp::{Filter, Reply};

use super::faults::FaultStore;
use crate::http::{ServeOptions, serve};

const OPTIONS: ServeOptions = ServeOptions::new(Duration::from_secs(10), Duration::ZERO);

/// Runs `filter` for `provider` on `addr` until `shutdown` turns true, closing and reopening
/// the listener as `refuse` faults come and go. `first` is the listener bound at start-up.
pub async fn run<F, R>(
    provider: ProviderId,
    first: TcpListener,
    filter: F,
    faults: Arc<FaultStore>,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let addr: SocketAddr = first.local_addr().expect("bound listener has an address");
    let mut listener = Some(first);
    let mut changes = faults.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if faults.refuses(provider) {
            listener = None;
            tokio::select! {
                () = faults.changed(&mut changes) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let bound = match listener.take() {
            Some(bound) => bound,
            None => match TcpListener::bind(addr).await {
                Ok(bound) => {
                    info!(provider = %provider, %addr, "sandbox provider listening again");
                    bound
                }
                Err(error) => {
                    warn!(provider = %provider, %addr, error = %error, "cannot reopen sandbox listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let stop = {
            let faults = faults.clone();
            let mut changes = faults.subscribe();
            let mut shutdown = shutdown.clone();
            async move {
                loop {
                    if faults.refuses(provider) || *shutdown.borrow() {
                        return;
                    }
                    tokio::select! {
                        () = faults.changed(&mut changes) => {}
                        changed = shutdown.changed() => if changed.is_err() { return },
                    }
                }
            }
        };
        serve(bound, filter.clone(), OPTIONS, stop).await;
        if faults.refuses(provider) {
            info!(provider = %provider, %addr, "sandbox provider refusing connections");
        }
    }
}
