//! Connecting a bank: `POST /v1/consents` starts a consent with every provider configured for
//! the bank; the user's browser goes through each provider's SCA in turn, coming back to
//! `GET /v1/consents/{id}/callback?provider=…` after each; when the last one is done the
//! accounts are fetched from every provider that granted access, stored as the user's
//! connections, and the browser is sent on to the app's `redirect_url`.

use std::net::IpAddr;
use std::sync::Arc;

use bankgate_actors::upstream::UpstreamError;
use bankgate_actors::{BankId, ProviderId};
use serde::Deserialize;
use tracing::{info, warn};
use uuid::Uuid;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::AppState;
use crate::copy;
use crate::providers::{ConsentState, RemoteAccount, StartedConsent};
use crate::store::{ConsentRecord, ProviderConsent};
use crate::token::Claims;
use bankgate_sandbox::http::{ApiError, ErrorCode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    pub bank: BankId,
    pub redirect_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackQuery {
    pub provider: ProviderId,
}

fn store_error(error: impl std::fmt::Display) -> ApiError {
    warn!(error = %error, "database error");
    ApiError::new(
        ErrorCode::Unavailable,
        "temporarily unavailable, try again shortly",
    )
    .with_retry_after(1)
}

fn valid_redirect(url: &str) -> bool {
    url.len() <= 2048
        && reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

impl AppState {
    /// The Neonomics access token the provider actor holds (fetched or refreshed as needed).
    async fn neonomics_token(&self) -> Result<String, UpstreamError> {
        let handle = self
            .providers
            .get(&ProviderId::Neonomics)
            .expect("every provider has a handle");
        Ok(handle.token().await?.unwrap_or_default())
    }

    fn callback_url(&self, consent: Uuid, provider: ProviderId) -> String {
        format!(
            "{}/v1/consents/{consent}/callback?provider={provider}",
            self.public_url
        )
    }

    async fn start_at(
        &self,
        provider: ProviderId,
        bank: BankId,
        user: &str,
        redirect: &str,
    ) -> Result<StartedConsent, UpstreamError> {
        match provider {
            ProviderId::Neonomics => {
                let token = self.neonomics_token().await?;
                self.neonomics
                    .start_consent(&token, bank, user, redirect)
                    .await
            }
            ProviderId::Psd2 => self.psd2.start_consent(bank, user, redirect).await,
        }
    }
}

pub async fn create(
    state: AppState,
    claims: Arc<Claims>,
    body: NewConsent,
) -> Result<Response, ApiError> {
    if !valid_redirect(&body.redirect_url) {
        return Err(ApiError::invalid_field(
            "redirect_url",
            "must be an absolute http(s) URL of at most 2048 characters",
        ));
    }
    let id = Uuid::new_v4();
    let mut providers = Vec::new();
    for &provider in &state.provider_order {
        match state
            .start_at(
                provider,
                body.bank,
                &claims.sub,
                &state.callback_url(id, provider),
            )
            .await
        {
            Ok(started) => providers.push(ProviderConsent {
                provider,
                external_id: started.external_id,
                sca_redirect: Some(started.sca_redirect),
                status: "pending".to_owned(),
            }),
            Err(error) => {
                warn!(bank = %body.bank, provider = %provider, error = %error, "consent not started")
            }
        }
    }
    let Some(first) = providers.first().and_then(|p| p.sca_redirect.clone()) else {
        let message = copy::consent_unavailable(body.bank);
        return Err(ApiError::new(ErrorCode::BankUnavailable, message).with_retry_after(60));
    };
    let record = ConsentRecord {
        id,
        user_id: claims.sub.clone(),
        bank: body.bank,
        status: "pending".to_owned(),
        redirect_url: body.redirect_url,
        providers,
    };
    state
        .store
        .create_consent(&record)
        .await
        .map_err(store_error)?;
    let body = serde_json::json!({"consent_id": id, "status": "pending", "sca_redirect": first});
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

fn redirect(to: &str) -> Result<Response, ApiError> {
    let uri = to.parse::<warp::http::Uri>().map_err(|_| {
        ApiError::new(
            ErrorCode::Unprocessable,
            "the redirect URL cannot be followed",
        )
    })?;
    Ok(warp::redirect::found(uri).into_response())
}

fn finished_url(record: &ConsentRecord, status: &str) -> String {
    let separator = if record.redirect_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{separator}consent_id={}&status={status}",
        record.redirect_url, record.id
    )
}

/// Where the user's browser lands after each provider's SCA.
pub async fn callback(
    state: AppState,
    id: Uuid,
    query: CallbackQuery,
    peer: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let record = state
        .store
        .consent(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such consent"))?;
    if record.status != "pending" {
        return redirect(&finished_url(&record, &record.status));
    }
    let Some(step) = record
        .providers
        .iter()
        .find(|p| p.provider == query.provider)
    else {
        return Err(ApiError::invalid_field(
            "provider",
            "this consent was not started with that provider",
        ));
    };
    let psu_ip = peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
    let (outcome, valid_until) = state.check(record.bank, step, &psu_ip).await;
    let status = match outcome {
        ConsentState::Valid => "active",
        ConsentState::Rejected => "rejected",
        ConsentState::Pending => "pending",
    };
    state
        .store
        .set_provider_consent(id, step.provider, status, valid_until)
        .await
        .map_err(store_error)?;

    // The next provider still waiting for the user's SCA, in the configured order.
    let position = record
        .providers
        .iter()
        .position(|p| p.provider == query.provider)
        .unwrap_or(0);
    if let Some(next) = record.providers[position + 1..]
        .iter()
        .find(|p| p.status == "pending")
        && let Some(sca) = &next.sca_redirect
    {
        return redirect(sca);
    }
    let record = state
        .store
        .consent(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such consent"))?;
    let mut accounts: Vec<(ProviderId, Vec<RemoteAccount>)> = Vec::new();
    for granted in record.providers.iter().filter(|p| p.status == "active") {
        match state.list_accounts(record.bank, granted, &psu_ip).await {
            Ok(list) => accounts.push((granted.provider, list)),
            Err(error) => {
                warn!(provider = %granted.provider, error = %error, "accounts not listed")
            }
        }
    }
    let expires_at = valid_until;
    let status = state
        .store
        .complete_consent(&record, &accounts, expires_at)
        .await
        .map_err(store_error)?;
    info!(bank = %record.bank, status = %status, "consent completed");
    state.sessions.reload_user(&record.user_id, None);
    redirect(&finished_url(&record, &status))
}

impl AppState {
    /// Asks the provider where the user's SCA left the consent.
    async fn check(
        &self,
        bank: BankId,
        step: &ProviderConsent,
        psu_ip: &str,
    ) -> (ConsentState, Option<chrono::DateTime<chrono::Utc>>) {
        let result = match step.provider {
            ProviderId::Psd2 => self.psd2.consent_state(bank, &step.external_id).await,
            ProviderId::Neonomics => match self.neonomics_token().await {
                Ok(token) => self
                    .neonomics
                    .accounts(&token, &step.external_id, psu_ip)
                    .await
                    .map(|(state, _)| (state, None)),
                Err(error) => Err(error),
            },
        };
        result.unwrap_or_else(|error| {
            warn!(provider = %step.provider, error = %error, "consent state unknown");
            (ConsentState::Rejected, None)
        })
    }

    async fn list_accounts(
        &self,
        bank: BankId,
        step: &ProviderConsent,
        psu_ip: &str,
    ) -> Result<Vec<RemoteAccount>, UpstreamError> {
        match step.provider {
            ProviderId::Psd2 => self.psd2.accounts(bank, &step.external_id, psu_ip).await,
            ProviderId::Neonomics => {
                let token = self.neonomics_token().await?;
                Ok(self
                    .neonomics
                    .accounts(&token, &step.external_id, psu_ip)
                    .await?
                    .1)
            }
        }
    }
}

pub async fn list(state: AppState, claims: Arc<Claims>) -> Result<Response, ApiError> {
    let connections = state
        .store
        .list_connections(&claims.sub)
        .await
        .map_err(store_error)?;
    Ok(warp::reply::json(&serde_json::json!({ "connections": connections })).into_response())
}

pub async fn delete(state: AppState, claims: Arc<Claims>, id: Uuid) -> Result<Response, ApiError> {
    if !state
        .store
        .delete_connection(&claims.sub, id)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("no such connection"));
    }
    state.sessions.reload_user(&claims.sub, Some(id));
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
