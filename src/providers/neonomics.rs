//! The Neonomics client: OAuth2 client credentials, sessions, consent, accounts, balances,
//! payments.
//!
//! Following Neonomics' documentation, page by page:
//! - the token (<https://docs.neonomics.io/docs/authentication>): the client-credentials grant
//!   at `/auth/realms/{realm}/protocol/openid-connect/token`, the realm being the
//!   environment's (`providers.neonomics.realm`: `sandbox`, `live`); the answer's
//!   `refresh_token` obtains the next access token while `refresh_expires_in` lasts, and a
//!   refresh token refused (400) falls back to the client credentials;
//! - errors (<https://docs.neonomics.io/docs/error-handling>): 510 is a client error, 520
//!   Neonomics' own and 530 the bank's (`failure_class`);
//! - a payment's amount is `instrumentedAmount`, a decimal string (the payments guide's
//!   example body, <https://docs.neonomics.io/docs/payments-1>).

use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::upstream::{
    AccessToken, Balance, BalanceCall, ConsentCall, ConsentStart, ConsentState, ConsentStatus,
    FailureClass, PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment, RemoteStatus,
    StartedConsent, Upstream, UpstreamError,
};
use bankgate_actors::{BankId, ProviderId};
use futures_util::future::BoxFuture;
use reqwest::{Method, RequestBuilder, Response};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    BaseUrl, Refusal, creditor_ref, http_client, is_domestic, read_success, reference_query,
    remote_status, transport_error,
};
use crate::settings::NeonomicsSettings;

/// Identifies bankgate's installation to Neonomics (`x-device-id`).
const DEVICE_ID: &str = "bankgate";

/// What a Neonomics error status says, by its error handling page
/// (<https://docs.neonomics.io/docs/error-handling>): 510 is a client error (the request as
/// sent, a session it does not know, a consent to be given: errorCode 1426), 520 Neonomics'
/// own failure and 530 the bank's. Only the last two, and a proxy's 5xx, say the path is down.
fn failure_class(status: u16, code: Option<&str>) -> FailureClass {
    match status {
        401 | 403 => FailureClass::Credentials,
        429 => FailureClass::RateLimited,
        510 if code == Some("1426") => FailureClass::Consent,
        510 => FailureClass::Client,
        500..=599 => FailureClass::Server,
        _ => FailureClass::Client,
    }
}

#[derive(Clone)]
pub struct NeonomicsClient {
    http: reqwest::Client,
    base: BaseUrl,
    /// `/auth/realms/{realm}/protocol/openid-connect/token`: the realm is the environment's.
    token_path: String,
    client_id: String,
    client_secret: SecretString,
    /// The refresh token of the last grant, while it is valid.
    refresh: Arc<std::sync::Mutex<Option<RefreshToken>>>,
}

/// A refresh token and when it stops being accepted.
struct RefreshToken {
    value: SecretString,
    until: tokio::time::Instant,
}

/// The token endpoint's answer (<https://docs.neonomics.io/docs/authentication>).
#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_expires_in: u64,
}

/// A refresh token this close to its end is not used: the request could outlive it.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_code: Option<String>,
}

#[derive(Deserialize)]
struct BalanceBody {
    #[serde(rename = "type")]
    kind: String,
    amount: Decimal,
    currency: String,
}

#[derive(Deserialize)]
struct BankBody {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountBody {
    id: String,
    iban: String,
    bban: Option<String>,
    account_name: Option<String>,
    currency: String,
}

impl NeonomicsClient {
    pub fn new(settings: &NeonomicsSettings) -> Arc<NeonomicsClient> {
        Arc::new(NeonomicsClient {
            http: http_client(settings.timeout),
            base: BaseUrl::parse(&settings.base_url),
            token_path: format!(
                "/auth/realms/{}/protocol/openid-connect/token",
                settings.realm
            ),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            refresh: Arc::default(),
        })
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, self.base.join(path))
            .header("x-device-id", DEVICE_ID);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// Classifies a Neonomics error answer.
    async fn failure(response: Response) -> UpstreamError {
        let refusal = Refusal::<ErrorBody>::read(response).await;
        let code = refusal.body.as_ref().and_then(|b| b.error_code.clone());
        let class = failure_class(refusal.status.as_u16(), code.as_deref());
        refusal.error(class, code.as_deref())
    }

    async fn send(request: RequestBuilder) -> Result<Response, UpstreamError> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Self::failure(response).await)
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        request: RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let response = Self::send(request).await?;
        read_success(response).await
    }

    /// A fresh access token: by the last grant's refresh token while it is valid (the grant
    /// Keycloak, Neonomics' token server, documents for it), else, or when the refresh is
    /// refused, by the client credentials.
    async fn token(&self) -> Result<AccessToken, UpstreamError> {
        let refresh = {
            let held = self.refresh.lock().expect("refresh token");
            held.as_ref()
                .filter(|r| r.until > tokio::time::Instant::now() + REFRESH_MARGIN)
                .map(|r| r.value.clone())
        };
        if let Some(refresh) = refresh {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose_secret()),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
            ];
            match self.grant(&form).await {
                Ok(token) => return Ok(token),
                // The refresh token refused (Keycloak's 400 `invalid_grant`: expired, spent,
                // the session ended): start over. A refused client (401) fails the same way
                // with its credentials, so it ends here.
                Err(error) if error.class == FailureClass::Client => {
                    *self.refresh.lock().expect("refresh token") = None;
                }
                Err(error) => return Err(error),
            }
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        self.grant(&form).await
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<AccessToken, UpstreamError> {
        let request = self.http.post(self.base.join(&self.token_path)).form(form);
        let body: TokenBody = Self::json(request).await?;
        *self.refresh.lock().expect("refresh token") = body
            .refresh_token
            .filter(|_| body.refresh_expires_in > 0)
            .map(|value| RefreshToken {
                value: SecretString::from(value),
                until: tokio::time::Instant::now() + Duration::from_secs(body.refresh_expires_in),
            });
        Ok(AccessToken {
            value: body.access_token,
            expires_in: Duration::from_secs(body.expires_in),
        })
    }

    /// Opens a session at the bank for the user (`x-psu-id`) and asks for a consent link that
    /// returns the user's browser to the redirect URL.
    async fn start_session(
        &self,
        token: Option<String>,
        start: ConsentStart,
    ) -> Result<StartedConsent, UpstreamError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Session {
            session_id: String,
        }
        #[derive(Deserialize)]
        struct Link {
            href: String,
        }
        #[derive(Deserialize)]
        struct Links {
            links: Vec<Link>,
        }
        let request = self
            .request(Method::POST, "/ics/v3/session", token.as_deref())
            .header("x-psu-id", &start.psu)
            .json(&serde_json::json!({"bankId": start.bank.bic()}));
        let session: Session = Self::json(request).await?;
        let request = self
            .request(
                Method::GET,
                &format!("/ics/v3/consent/{}", session.session_id),
                token.as_deref(),
            )
            .header("x-redirect-url", &start.redirect_url);
        let links: Links = Self::json(request).await?;
        let link = links
            .links
            .into_iter()
            .next()
            .ok_or_else(|| UpstreamError::new(FailureClass::Server, "no consent link"))?;
        Ok(StartedConsent {
            external_id: session.session_id,
            sca_redirect: link.href,
        })
    }

    /// Lists the accounts of a session; a session without a valid consent is `Rejected`. It is
    /// how both the consent's state and its accounts are learnt: Neonomics has no consent
    /// status of its own.
    async fn session_accounts(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> Result<(ConsentState, Vec<RemoteAccount>), UpstreamError> {
        let request = self
            .request(Method::GET, "/ics/v3/accounts", token.as_deref())
            .header("x-session-id", &consent.external_id)
            .header("x-psu-ip-address", &consent.psu_ip);
        match Self::json::<Vec<AccountBody>>(request).await {
            Ok(list) => Ok((
                ConsentState::Valid,
                list.into_iter()
                    .map(|a| RemoteAccount {
                        id: a.id,
                        iban: a.iban,
                        bban: a.bban,
                        name: a.account_name,
                        currency: a.currency,
                    })
                    .collect(),
            )),
            Err(error) if error.class == FailureClass::Consent => {
                Ok((ConsentState::Rejected, Vec::new()))
            }
            Err(error) => Err(error),
        }
    }

    async fn read_balance(
        &self,
        token: Option<String>,
        call: BalanceCall,
    ) -> Result<Balance, UpstreamError> {
        let path = format!("/ics/v3/accounts/{}/balances", call.account.account_id);
        let mut request = self
            .request(Method::GET, &path, token.as_deref())
            .header("x-session-id", &call.account.consent_ref)
            .header("x-request-id", &call.request_id);
        if let Some(ip) = call.psu_ip {
            request = request.header("x-psu-ip-address", ip.to_string());
        }
        let balances: Vec<BalanceBody> = Self::json(request).await?;
        let preferred = ["ITAV", "CLAV", "ITBD", "CLBD"];
        let chosen = preferred
            .iter()
            .find_map(|kind| balances.iter().find(|b| b.kind == *kind))
            .or(balances.first())
            .ok_or_else(|| UpstreamError::new(FailureClass::Server, "no balance in the answer"))?;
        Ok(Balance {
            amount: chosen.amount,
            currency: chosen.currency.clone(),
            balance_type: chosen.kind.clone(),
            provider: ProviderId::Neonomics,
            fetched_at: chrono::Utc::now(),
        })
    }
}

/// A payment as Neonomics renders it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    status: String,
    #[serde(default)]
    links: Vec<PaymentLink>,
}

#[derive(Deserialize)]
struct PaymentLink {
    rel: String,
    href: String,
}

impl PaymentBody {
    fn remote(self) -> RemotePayment {
        let status = remote_status(&self.status);
        RemotePayment {
            provider: ProviderId::Neonomics,
            payment_id: self.payment_id,
            status,
            sca_redirect: self
                .links
                .into_iter()
                .find(|l| l.rel == "sca")
                .map(|l| l.href)
                .filter(|_| status == RemoteStatus::PendingSca),
        }
    }
}

fn product(order: &PaymentOrder) -> &'static str {
    if is_domestic(order) {
        "domestic-transfer"
    } else {
        "cross-border-transfer"
    }
}

impl NeonomicsClient {
    async fn pay(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<RemotePayment, UpstreamError> {
        let body = serde_json::json!({
            "debtorAccount": {"iban": order.debtor_iban},
            "creditorAccount": creditor_ref(&order),
            "creditorName": order.creditor_name,
            "instrumentedAmount": order.amount.to_string(),
            "currency": order.currency,
            "endToEndIdentification": order.reference,
            "remittanceInformationUnstructured": order.remittance_info,
        });
        let request = self
            .request(
                Method::POST,
                &format!("/ics/v3/payments/{}", product(&order)),
                token.as_deref(),
            )
            .header("x-session-id", &account.consent_ref)
            .header("x-psu-ip-address", &order.psu_ip)
            .header("x-redirect-url", &order.redirect_url)
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .json(&body);
        Ok(Self::json::<PaymentBody>(request).await?.remote())
    }

    async fn find(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<Option<RemotePayment>, UpstreamError> {
        let request = self
            .request(
                Method::GET,
                &format!(
                    "/ics/v3/payments/{}?{}",
                    product(&order),
                    reference_query(&order)
                ),
                token.as_deref(),
            )
            .header("x-session-id", &account.consent_ref);
        let found: Vec<PaymentBody> = Self::json(request).await?;
        Ok(found.into_iter().next().map(PaymentBody::remote))
    }

    /// Reads the bank's entry in Neonomics' bank list: reachable, and `AVAILABLE`.
    async fn bank_status(&self, token: Option<String>, bank: BankId) -> Result<(), UpstreamError> {
        let request = self.request(
            Method::GET,
            &format!("/ics/v3/banks/{}", bank.bic()),
            token.as_deref(),
        );
        let body: BankBody = Self::json(request).await?;
        if body.status == "AVAILABLE" {
            Ok(())
        } else {
            Err(UpstreamError::new(
                FailureClass::Server,
                "Neonomics reports the bank unavailable",
            ))
        }
    }
}

impl Upstream for NeonomicsClient {
    fn provider(&self) -> ProviderId {
        ProviderId::Neonomics
    }

    fn authenticate(&self) -> BoxFuture<'static, Result<Option<AccessToken>, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.token().await.map(Some) })
    }

    fn balance(
        &self,
        token: Option<String>,
        call: BalanceCall,
    ) -> BoxFuture<'static, Result<Balance, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.read_balance(token, call).await })
    }

    fn initiate_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.pay(token, account, order).await })
    }

    fn find_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> BoxFuture<'static, Result<Option<RemotePayment>, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.find(token, account, order).await })
    }

    fn probe(
        &self,
        token: Option<String>,
        bank: BankId,
    ) -> BoxFuture<'static, Result<(), UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.bank_status(token, bank).await })
    }

    fn start_consent(
        &self,
        token: Option<String>,
        start: ConsentStart,
    ) -> BoxFuture<'static, Result<StartedConsent, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.start_session(token, start).await })
    }

    fn consent_state(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<ConsentStatus, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move {
            let (state, _) = this.session_accounts(token, consent).await?;
            Ok(ConsentStatus {
                state,
                valid_until: None,
            })
        })
    }

    fn accounts(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<Vec<RemoteAccount>, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { Ok(this.session_accounts(token, consent).await?.1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankgate_sandbox::{Sandbox, SandboxOptions};

    fn client_of(sandbox: &Sandbox, realm: &str) -> Arc<NeonomicsClient> {
        let mut settings = crate::settings::Settings::load(None, &Default::default())
            .unwrap()
            .providers
            .neonomics;
        settings.base_url = sandbox.neonomics_url();
        settings.realm = realm.to_owned();
        NeonomicsClient::new(&settings)
    }

    async fn sandbox() -> Sandbox {
        let defaults = crate::settings::Settings::load(None, &Default::default()).unwrap();
        let mut options = SandboxOptions::from_settings(&defaults.sandbox);
        options.port = 0;
        Sandbox::start(options).await.unwrap()
    }

    fn held_refresh(client: &NeonomicsClient) -> Option<String> {
        let held = client.refresh.lock().unwrap();
        held.as_ref().map(|r| r.value.expose_secret().to_owned())
    }

    /// The realm is the environment's, and a new access token is asked for with the last
    /// grant's refresh token, which the token server then no longer accepts.
    #[tokio::test]
    async fn tokens_come_from_the_environments_realm_and_are_renewed_by_refresh() {
        let sandbox = sandbox().await;
        let client = client_of(&sandbox, "sandbox");
        client.token().await.unwrap();
        let first = held_refresh(&client).expect("a refresh token");
        client.token().await.unwrap();
        let second = held_refresh(&client).expect("a refresh token");
        assert_ne!(first, second, "renewed by the refresh grant");
        // The first refresh token was spent by that renewal.
        *client.refresh.lock().unwrap() = Some(RefreshToken {
            value: SecretString::from(first),
            until: tokio::time::Instant::now() + Duration::from_secs(3600),
        });
        client
            .token()
            .await
            .expect("falls back to the client credentials");
        assert!(held_refresh(&client).is_some());

        let live = client_of(&sandbox, "live");
        let refused = live.token().await.unwrap_err();
        assert_eq!(refused.status, Some(404), "{refused}");
        sandbox.shutdown().await;
    }

    #[test]
    fn only_neonomics_and_bank_errors_say_the_path_is_down() {
        // An unknown session (1003) is a client error: counted as the bank failing, a
        // fresh sandbox behind an old database read as `bank_down`.
        assert_eq!(failure_class(510, Some("1003")), FailureClass::Client);
        assert_eq!(failure_class(510, Some("1426")), FailureClass::Consent);
        assert_eq!(failure_class(520, Some("5200")), FailureClass::Server);
        assert_eq!(failure_class(530, None), FailureClass::Server);
        assert_eq!(failure_class(503, None), FailureClass::Server);
        assert_eq!(failure_class(404, Some("1404")), FailureClass::Client);
        assert_eq!(failure_class(401, None), FailureClass::Credentials);
        assert_eq!(failure_class(429, None), FailureClass::RateLimited);
    }
}
