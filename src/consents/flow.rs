//! The consent flow itself: `start` asks each open provider path for a consent and records
//! them; `callback` runs each time the user's browser comes back from a provider's SCA, asks
//! that provider where the consent stands, and sends the browser on to the next provider
//! still waiting or, after the last, stores the accounts and answers the app's redirect URL.
//! A browser back before its SCA is done is sent back to it; a provider that cannot say
//! where the consent stands leaves it pending and the callback answers 503, to be retried.

use bankgate_actors::national_id::NationalId;
use bankgate_actors::upstream::{
    ConsentCall, ConsentStart, ConsentState, ConsentStatus, RemoteAccount, StartedConsent,
};
use bankgate_actors::{BankId, ProviderId};
use tracing::{info, warn};
use uuid::Uuid;

use super::store::{ConsentRecord, ProviderConsent};
use super::{ConsentError, Consents};

/// A consent started: where the user's browser goes first.
#[derive(Debug)]
pub struct Started {
    pub id: Uuid,
    pub sca_redirect: String,
}

/// The app's redirect URL with the consent's outcome appended.
fn finished_url(record: &ConsentRecord, status: &str) -> String {
    crate::redirect::with_outcome(
        &record.redirect_url,
        &[("consent_id", &record.id.to_string()), ("status", status)],
    )
}

impl Consents {
    fn callback_url(&self, consent: Uuid, provider: ProviderId, state: &str) -> String {
        format!(
            "{}/v1/consents/{consent}/callback?provider={provider}&state={state}",
            self.public_url
        )
    }

    /// The providers to ask for a consent at `bank`, in order: those whose path the bank's
    /// breakers (or an operator's pin) let a call through. A bank actor that cannot answer
    /// (restarting) holds no one back.
    async fn open_paths(&self, bank: BankId) -> Vec<ProviderId> {
        let status = match self.banks.get(&bank) {
            Some(handle) => handle.status().await.ok(),
            None => None,
        };
        self.order
            .iter()
            .copied()
            .filter(|provider| {
                status.as_ref().is_none_or(|status| {
                    (status.paths.iter())
                        .find(|path| path.provider == *provider)
                        .is_none_or(|path| path.allows_calls())
                })
            })
            .collect()
    }

    /// Counts a new consent against the user's limits: so many per window, and so many
    /// waiting for SCA at once (which bounds the rows a user can leave pending).
    async fn admit(&self, user: &str) -> Result<(), ConsentError> {
        let limits = &self.limits;
        limits
            .per_user
            .check_key(&user.to_owned())
            .map_err(|not_until| {
                let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
                ConsentError::RateLimited {
                    retry_after: not_until.wait_time_from(now),
                }
            })?;
        if self.store.pending_consents(user).await? >= u64::from(limits.max_pending) {
            return Err(ConsentError::TooManyPending);
        }
        Ok(())
    }

    /// Starts a consent for `user` at `bank` with every open provider path.
    pub async fn start(
        &self,
        user: &str,
        bank: BankId,
        psu: NationalId,
        redirect_url: String,
    ) -> Result<Started, ConsentError> {
        if !crate::redirect::is_allowed(&redirect_url, &self.limits.allowed_redirects) {
            return Err(ConsentError::InvalidRedirect);
        }
        self.admit(user).await?;
        let id = Uuid::new_v4();
        let mut providers = Vec::new();
        for provider in self.open_paths(bank).await {
            // 122 random bits: the callback for this provider's step carries it.
            let state = Uuid::new_v4().simple().to_string();
            let start = ConsentStart {
                bank,
                psu: psu.clone(),
                redirect_url: self.callback_url(id, provider, &state),
            };
            match self.provider(provider).start_consent(start).await {
                Ok(StartedConsent {
                    external_id,
                    sca_redirect,
                }) => providers.push(ProviderConsent {
                    provider,
                    external_id,
                    sca_redirect: Some(sca_redirect),
                    status: "pending".to_owned(),
                    callback_state: Some(state),
                }),
                Err(error) => {
                    warn!(bank = %bank, provider = %provider, error = %error, "consent not started")
                }
            }
        }
        let Some(first) = providers.first().and_then(|p| p.sca_redirect.clone()) else {
            return Err(ConsentError::Unavailable(bank));
        };
        let record = ConsentRecord {
            id,
            user_id: user.to_owned(),
            bank,
            status: "pending".to_owned(),
            redirect_url,
            providers,
        };
        self.store.create_consent(&record).await?;
        Ok(Started {
            id,
            sca_redirect: first,
        })
    }

    /// The user's browser is back from `provider`'s SCA: answers where it goes next.
    pub async fn callback(
        &self,
        id: Uuid,
        provider: ProviderId,
        state: Option<&str>,
        psu_ip: String,
    ) -> Result<String, ConsentError> {
        let record = self.consent(id).await?;
        let Some(step) = record.providers.iter().find(|p| p.provider == provider) else {
            return Err(ConsentError::NotStartedWith);
        };
        // Only the browser the provider sent back, once: the state is the step's own and
        // is used up when the step concludes.
        let expected = step.callback_state.as_deref().map(str::as_bytes);
        let given = state.map(str::as_bytes);
        let matches = match (expected, given) {
            (Some(expected), Some(given)) => {
                aws_lc_rs::constant_time::verify_slices_are_equal(expected, given).is_ok()
            }
            _ => false,
        };
        if !matches {
            return Err(ConsentError::BadState);
        }
        if record.status != "pending" {
            return Ok(finished_url(&record, &record.status));
        }
        let call = ConsentCall {
            bank: record.bank,
            external_id: step.external_id.clone(),
            psu_ip,
        };
        let ConsentStatus { state, valid_until } = self
            .provider(provider)
            .consent_state(call.clone())
            .await
            .map_err(|error| {
                warn!(bank = %record.bank, provider = %provider, error = %error, "consent state unknown; the callback may be retried");
                ConsentError::NotConfirmed(record.bank)
            })?;
        let status = match state {
            ConsentState::Valid => "active",
            ConsentState::Rejected => "rejected",
            // Back before the user finished this provider's SCA: back to it, and the consent
            // stays pending.
            ConsentState::Pending => {
                return Ok(match &step.sca_redirect {
                    Some(sca) => sca.clone(),
                    None => finished_url(&record, "pending"),
                });
            }
        };
        self.store
            .set_provider_consent(id, provider, status, valid_until)
            .await?;

        // The next provider still waiting for the user's SCA, in the configured order.
        let position = (record.providers.iter())
            .position(|p| p.provider == provider)
            .unwrap_or(0);
        if let Some(next) = record.providers[position + 1..]
            .iter()
            .find(|p| p.status == "pending")
            && let Some(sca) = &next.sca_redirect
        {
            return Ok(sca.clone());
        }
        let record = self.consent(id).await?;
        let mut accounts: Vec<(ProviderId, Vec<RemoteAccount>)> = Vec::new();
        for granted in record.providers.iter().filter(|p| p.status == "active") {
            let call = ConsentCall {
                external_id: granted.external_id.clone(),
                ..call.clone()
            };
            match self.provider(granted.provider).accounts(call).await {
                Ok(list) => accounts.push((granted.provider, list)),
                Err(error) => {
                    warn!(provider = %granted.provider, error = %error, "accounts not listed")
                }
            }
        }
        let status = (self.store)
            .complete_consent(&record, &accounts, valid_until)
            .await?;
        info!(bank = %record.bank, status = %status, "consent completed");
        self.sessions.reload_user(&record.user_id, None);
        Ok(finished_url(&record, &status))
    }

    async fn consent(&self, id: Uuid) -> Result<ConsentRecord, ConsentError> {
        (self.store.consent(id).await?).ok_or(ConsentError::NoSuchConsent)
    }
}
