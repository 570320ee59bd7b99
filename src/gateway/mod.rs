//! The gateway process: the client API and the ops API on their own listeners, over one
//! PostgreSQL pool.

mod client;
mod ops;

use std::net::SocketAddr;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::{ServeOptions, bind, serve};
use crate::settings::Settings;

/// What the gateway's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
}

/// A running gateway.
pub struct Gateway {
    client: SocketAddr,
    ops: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the gateway: {0}")]
pub struct GatewayError(#[from] std::io::Error);

impl Gateway {
    /// Binds both listeners and starts serving. The pool must point at a migrated database.
    pub async fn start(settings: &Settings, pool: Pool) -> Result<Gateway, GatewayError> {
        let client_listener = bind(settings.http.client_addr).await?;
        let ops_listener = bind(settings.http.ops_addr).await?;
        let client = client_listener.local_addr()?;
        let ops = ops_listener.local_addr()?;
        let state = AppState { pool };
        let options = ServeOptions {
            header_read_timeout: settings.http.header_read_timeout,
            drain: settings.http.shutdown_grace,
        };

        let (shutdown, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(
            client_listener,
            client::routes(state.clone()),
            options,
            wait_for(stopped.clone()),
        ));
        tasks.spawn(serve(
            ops_listener,
            ops::routes(state),
            options,
            wait_for(stopped.clone()),
        ));
        tasks.spawn(async move {
            tokio::select! {
                () = crate::telemetry::upkeep() => {}
                () = wait_for(stopped) => {}
            }
        });
        Ok(Gateway {
            client,
            ops,
            shutdown,
            tasks,
        })
    }

    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops)
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown grace) and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
