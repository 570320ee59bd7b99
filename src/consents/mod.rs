//! Connecting a bank, as a service beside payments: a consent is started with every provider
//! configured for the bank whose path is open; the user's browser goes through each
//! provider's SCA in turn, coming back to `GET /v1/consents/{id}/callback?provider=…` after
//! each; when the last one is done the accounts are fetched from every provider that granted
//! access and stored as the user's connections.
//!
//! Every call to a provider goes through its `ProviderHandle` (quota, concurrency cap, token,
//! timeout, the call log the diagnosis reads), like a balance read, and a provider whose
//! breaker for the bank is open (or pinned open by an operator) is not asked at all.
//!
//! - `flow.rs` — starting a consent and the SCA callbacks that finish it.
//! - `store.rs` — its records in PostgreSQL, and the user's connections.
//!
//! The client API's handlers (`gateway/consents.rs`) only parse requests and shape answers.

mod flow;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use bankgate_actors::bank::BankHandle;
use bankgate_actors::provider::ProviderHandle;
use bankgate_actors::session::Sessions;
use bankgate_actors::upstream::StoreError;
use bankgate_actors::{BankId, ProviderId};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use tracing::warn;
use uuid::Uuid;

pub use flow::Started;
pub use store::{ConnectionView, ConsentStore};

use crate::copy;
use crate::quota::per_window;
use crate::settings::ConsentsSettings;
use bankgate_sandbox::http::{ApiError, ErrorCode};

/// Why the consent service said no.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error(
        "must be an absolute http(s) URL of at most 2048 characters within consents.allowed_redirect_urls"
    )]
    InvalidRedirect,
    #[error("no such consent")]
    NoSuchConsent,
    #[error("this consent was not started with that provider")]
    NotStartedWith,
    /// The callback's `state` is missing, wrong or already used.
    #[error("the callback's state is missing, does not match or was used")]
    BadState,
    #[error("no such connection")]
    NoSuchConnection,
    #[error("too many consents started; try again later")]
    RateLimited { retry_after: std::time::Duration },
    #[error("too many consents are waiting for their SCA; finish one or try again later")]
    TooManyPending,
    /// The provider could not say where the user's SCA left the consent: it stays pending
    /// and the callback may be tried again.
    #[error("{0} could not confirm the consent yet; try again shortly")]
    NotConfirmed(BankId),
    /// No provider could start a consent at the bank.
    #[error("no provider could start a consent at {0}")]
    Unavailable(BankId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ConsentError> for ApiError {
    fn from(error: ConsentError) -> ApiError {
        let message = error.to_string();
        match error {
            ConsentError::InvalidRedirect => ApiError::invalid_field("redirect_url", message),
            ConsentError::NotStartedWith => ApiError::invalid_field("provider", message),
            ConsentError::BadState => ApiError::new(ErrorCode::Forbidden, message),
            ConsentError::RateLimited { retry_after } => {
                ApiError::new(ErrorCode::RateLimited, message)
                    .with_retry_after(retry_after.as_secs() + 1)
            }
            ConsentError::NotConfirmed(_) => {
                ApiError::new(ErrorCode::Unavailable, message).with_retry_after(5)
            }
            ConsentError::TooManyPending => {
                ApiError::new(ErrorCode::RateLimited, message).with_retry_after(60)
            }
            ConsentError::NoSuchConsent | ConsentError::NoSuchConnection => {
                ApiError::not_found(message)
            }
            ConsentError::Unavailable(bank) => {
                ApiError::new(ErrorCode::BankUnavailable, copy::consent_unavailable(bank))
                    .with_retry_after(60)
            }
            ConsentError::Store(error) => {
                warn!(error = %error, "database error");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "temporarily unavailable, try again shortly",
                )
                .with_retry_after(1)
            }
        }
    }
}

pub struct Consents {
    store: ConsentStore,
    banks: Arc<HashMap<BankId, BankHandle>>,
    providers: Arc<HashMap<ProviderId, ProviderHandle>>,
    sessions: Arc<Sessions>,
    /// The providers in the order a bank's consent is started with them.
    order: Vec<ProviderId>,
    /// Where users' browsers reach the client API (the SCA return address).
    public_url: String,
    limits: ConsentLimits,
}

/// What a user may ask of the consent service: where a consent may send the browser when it
/// is done, how many consents may be started per window, and how many may wait for SCA.
pub struct ConsentLimits {
    pub allowed_redirects: Vec<String>,
    pub per_user: DefaultKeyedRateLimiter<String>,
    pub max_pending: u32,
}

impl ConsentLimits {
    pub fn new(settings: &ConsentsSettings) -> ConsentLimits {
        let quota = per_window(settings.per_user_limit, settings.limit_window);
        ConsentLimits {
            allowed_redirects: settings.allowed_redirect_urls.clone(),
            per_user: RateLimiter::keyed(quota),
            max_pending: settings.max_pending,
        }
    }

    /// Forgets the users who have started no consent within a window: without it, the
    /// limiter holds an entry for every user who ever connected a bank.
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
    }
}

impl Consents {
    pub fn new(
        store: ConsentStore,
        banks: Arc<HashMap<BankId, BankHandle>>,
        providers: Arc<HashMap<ProviderId, ProviderHandle>>,
        sessions: Arc<Sessions>,
        order: Vec<ProviderId>,
        public_url: String,
        limits: ConsentLimits,
    ) -> Consents {
        Consents {
            store,
            banks,
            providers,
            sessions,
            order,
            public_url,
            limits,
        }
    }

    /// Forgets what is no longer needed to enforce the limits (`ConsentLimits::forget_idle`).
    pub fn housekeeping(&self) {
        self.limits.forget_idle();
    }

    /// This gateway's OpenAPI document, with its redirect allow-list as the pattern a
    /// consent's `redirect_url` must match.
    pub fn openapi(&self, document: &str) -> String {
        let pattern = crate::redirect::pattern(&self.limits.allowed_redirects);
        // Inside a YAML double-quoted string, a backslash is written twice.
        document.replace("{redirect_url_pattern}", &pattern.replace('\\', "\\\\"))
    }

    fn provider(&self, provider: ProviderId) -> &ProviderHandle {
        self.providers
            .get(&provider)
            .expect("every provider has a handle")
    }

    /// The user's connections, as `GET /v1/connections` lists them.
    pub async fn connections(&self, user: &str) -> Result<Vec<ConnectionView>, ConsentError> {
        Ok(self.store.list_connections(user).await?)
    }

    /// Removes one of the user's connections; the user's session forgets it at once.
    pub async fn remove_connection(&self, user: &str, id: Uuid) -> Result<(), ConsentError> {
        if !self.store.delete_connection(user, id).await? {
            return Err(ConsentError::NoSuchConnection);
        }
        self.sessions.reload_user(user, Some(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ConsentLimits;
    use crate::settings::ConsentsSettings;

    /// A user who started a consent a window ago is forgotten by the housekeeping: the
    /// limiter does not keep every user who ever connected a bank.
    #[tokio::test]
    async fn the_consent_limiter_forgets_users_idle_for_a_window() {
        let limits = ConsentLimits::new(&ConsentsSettings {
            allowed_redirect_urls: Vec::new(),
            per_user_limit: 2,
            limit_window: Duration::from_millis(20),
            max_pending: 1,
        });
        limits.per_user.check_key(&"kari".to_owned()).unwrap();
        limits.forget_idle();
        assert_eq!(limits.per_user.len(), 1, "kari is within her window");
        tokio::time::sleep(Duration::from_millis(60)).await;
        limits.forget_idle();
        assert_eq!(limits.per_user.len(), 0);
    }
}
