//! The provider actor: the one owner of the provider's token. It hands out a valid token,
//! authenticates when there is none (one request for every waiter), replaces a refused one
//! once, and after a credentials error makes no call until `credentials_backoff` has passed.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ProviderId;
use crate::metrics;
use crate::upstream::{AccessToken, FailureClass, MAX_GRANT_LIFETIME, UpstreamError};

use super::{HeldToken, ProviderHandle, ProviderMsg, ProviderStatus, Shared, TokenReply};

pub struct ProviderActor;

pub struct ProviderState {
    shared: Arc<Shared>,
    authenticating: bool,
    waiters: Vec<TokenReply>,
    credentials_invalid_until: Option<Instant>,
    last_auth_error: Option<FailureClass>,
}

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderHandle;

    async fn pre_start(
        &self,
        myself: ActorRef<ProviderMsg>,
        handle: ProviderHandle,
    ) -> Result<ProviderState, ActorProcessingErr> {
        handle.actor.set(myself);
        // A restarted actor starts afresh, token included.
        handle.shared.hold_token(None);
        export_credentials(handle.shared.id, true);
        Ok(ProviderState {
            shared: handle.shared,
            authenticating: false,
            waiters: Vec::new(),
            credentials_invalid_until: None,
            last_auth_error: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderMsg::Token(reply) => state.hand_out(myself, reply),
            ProviderMsg::Rejected { token, reply } => {
                // Only the first caller holding the rejected token forces a refresh.
                let rejected = (state.shared.token.read().expect("token").as_ref())
                    .is_some_and(|held| held.value == token);
                if rejected {
                    state.shared.hold_token(None);
                }
                state.hand_out(myself, reply);
            }
            ProviderMsg::Authenticated(result) => state.authenticated(result),
            ProviderMsg::Status(reply) => {
                let now = Instant::now();
                let _ = reply.send(ProviderStatus {
                    provider: state.shared.id,
                    credentials_valid: state
                        .credentials_invalid_until
                        .is_none_or(|until| until <= now),
                    last_auth_error: state.last_auth_error,
                    rate_limit_headroom: state.headroom(),
                });
            }
            #[cfg(any(test, feature = "test-util"))]
            ProviderMsg::Panic => panic!("chaos: provider actor asked to panic"),
        }
        Ok(())
    }
}

fn export_credentials(provider: ProviderId, valid: bool) {
    ::metrics::gauge!(metrics::PROVIDER_CREDENTIALS_VALID, "provider" => provider.as_str())
        .set(if valid { 1.0 } else { 0.0 });
}

impl ProviderState {
    fn headroom(&self) -> u32 {
        // A check consumes a cell; report the quota when it is not exhausted.
        match self.shared.limiter.check() {
            Ok(()) => self.shared.config.rate_per_s,
            Err(_) => 0,
        }
    }

    fn hand_out(&mut self, myself: ActorRef<ProviderMsg>, reply: TokenReply) {
        let now = Instant::now();
        if let Some(token) = self.shared.valid_token(now) {
            let _ = reply.send(Ok(token));
            return;
        }
        if let Some(until) = self.credentials_invalid_until {
            if until > now {
                let mut error = UpstreamError::new(
                    FailureClass::Credentials,
                    "provider credentials are invalid",
                );
                error.retry_after = Some(until - now);
                let _ = reply.send(Err(error));
                return;
            }
            self.credentials_invalid_until = None;
        }
        self.waiters.push(reply);
        if !self.authenticating {
            self.authenticating = true;
            let upstream = self.shared.upstream.clone();
            let timeout = self.shared.config.timeout;
            tokio::spawn(async move {
                // The request runs in a task of its own, so that one that panics (a bug, or
                // an answer the adapter could not take) is answered like any failure: the
                // waiters hear of it and the next caller asks again, instead of every caller
                // waiting on a request that is gone.
                let mut request = tokio::spawn(upstream.authenticate());
                let result = match tokio::time::timeout(timeout, &mut request).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(UpstreamError::new(
                        FailureClass::Server,
                        "token request failed unexpectedly",
                    )),
                    Err(_) => {
                        request.abort();
                        Err(UpstreamError::new(
                            FailureClass::Timeout,
                            "token request timed out",
                        ))
                    }
                };
                let _ = myself.send_message(ProviderMsg::Authenticated(result));
            });
        }
    }

    fn authenticated(&mut self, result: Result<Option<AccessToken>, UpstreamError>) {
        self.authenticating = false;
        let now = Instant::now();
        let answer = match result {
            Ok(token) => {
                let renew_at = match &token {
                    Some(t) => {
                        now + t
                            .expires_in
                            .min(MAX_GRANT_LIFETIME)
                            .saturating_sub(self.shared.config.token_refresh_margin)
                    }
                    None => now + Duration::from_secs(365 * 24 * 3600),
                };
                let value = token.map(|t| t.value);
                self.shared.hold_token(Some(HeldToken {
                    value: value.clone(),
                    renew_at,
                }));
                self.last_auth_error = None;
                export_credentials(self.shared.id, true);
                Ok(value)
            }
            Err(error) => {
                self.last_auth_error = Some(error.class);
                if error.class == FailureClass::Credentials {
                    warn!(provider = %self.shared.id, "provider rejected our credentials; calls stop");
                    self.credentials_invalid_until =
                        Some(now + self.shared.config.credentials_backoff);
                    export_credentials(self.shared.id, false);
                } else {
                    info!(provider = %self.shared.id, error = %error, "token request failed");
                }
                Err(error)
            }
        };
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }
}
