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
//! - banks (<https://docs.neonomics.io/reference/createsession>): a session names its bank by
//!   Neonomics' own id from `GET /ics/v3/banks`, matched here by BIC, never the BIC itself;
//! - accounts (<https://docs.neonomics.io/docs/accounts-1>): the holder's `ownerName`
//!   (<https://docs.neonomics.io/docs/changelog>) is the payments' `debtorName`; balance types
//!   are the ISO codes page's (`AVLB` first, <https://docs.neonomics.io/docs/iso-codes>);
//! - payments (<https://docs.neonomics.io/docs/payments-1>): see `pay`, `authorize`,
//!   `complete` and `find` below, and `payment_status` for the status codes; the amount is
//!   `instrumentedAmount`, a decimal string (the payments guide's example body).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::upstream::{
    AccessToken, Balance, BalanceCall, ConsentCall, ConsentStart, ConsentState, ConsentStatus,
    FailureClass, Lookup, PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment,
    RemoteStatus, StartedConsent, Upstream, UpstreamError,
};
use bankgate_actors::{BankId, ProviderId};
use futures_util::future::BoxFuture;
use reqwest::{Method, RequestBuilder, Response};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    BaseUrl, Refusal, creditor_ref, http_client, is_domestic, read_success, transport_error,
};
use crate::settings::NeonomicsSettings;

/// Identifies bankgate's installation to Neonomics (`x-device-id`).
const DEVICE_ID: &str = "bankgate";

/// What a Neonomics error answer says, by its error handling page
/// (<https://docs.neonomics.io/docs/error-handling>): 510 is a client error (the request as
/// sent, a session it does not know), one of `type` CONSENT the end user's consent to be given
/// (errorCode 1426); 520 is Neonomics' own failure and 530 the bank's, of `type` NETWORK when
/// the way there failed. Only those, and a proxy's 5xx, say the path is down.
fn failure_class(status: u16, code: Option<&str>, kind: Option<&str>) -> FailureClass {
    match (status, kind) {
        (401 | 403, _) => FailureClass::Credentials,
        (429, _) => FailureClass::RateLimited,
        (510, Some("CONSENT")) => FailureClass::Consent,
        (510, _) if code == Some("1426") => FailureClass::Consent,
        (510, _) => FailureClass::Client,
        (520 | 530, Some("NETWORK")) => FailureClass::Network,
        (500..=599, _) => FailureClass::Server,
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
    /// Neonomics' id for each bank, learnt from its bank list.
    bank_ids: Arc<std::sync::Mutex<HashMap<BankId, String>>>,
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

/// Neonomics' error object (<https://docs.neonomics.io/docs/error-handling>): `errorCode`
/// is what to build on, `type` says what kind of failure, `links` what to do next.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_code: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    links: Vec<Link>,
}

/// A link's path: Neonomics' links may name another host (its error example's is
/// `dev-api.neonomics.io`); calls go only to the configured base URL.
fn link_path(href: &str) -> String {
    match reqwest::Url::parse(href) {
        Ok(url) => url.path().to_owned(),
        Err(_) => href.split('?').next().unwrap_or_default().to_owned(),
    }
}

/// The payment's id when a refusal is 510 with errorCode 1428, payment authorization
/// required: it is in the authorize link's `meta.id`
/// (<https://docs.neonomics.io/docs/error-handling>).
fn authorization_required(refusal: &Refusal<ErrorBody>) -> Option<String> {
    let body = refusal.body.as_ref()?;
    if refusal.status.as_u16() != 510 || body.error_code.as_deref() != Some("1428") {
        return None;
    }
    body.links.first()?.meta.id.clone()
}

#[derive(Deserialize)]
struct BalanceBody {
    #[serde(rename = "type")]
    kind: String,
    amount: Decimal,
    currency: String,
}

/// A bank in `GET /ics/v3/banks`: Neonomics' own id for it, its BIC, and whether it is up.
#[derive(Deserialize)]
struct BankBody {
    id: String,
    bic: String,
    status: String,
}

/// An account in `GET /ics/v3/accounts` (<https://docs.neonomics.io/docs/accounts-1>;
/// `ownerName` from <https://docs.neonomics.io/docs/changelog>).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountBody {
    id: String,
    iban: String,
    bban: Option<String>,
    account_name: Option<String>,
    currency: String,
    #[serde(default)]
    owner_name: Option<String>,
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
            bank_ids: Arc::default(),
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
        Self::classify(&Refusal::<ErrorBody>::read(response).await)
    }

    fn classify(refusal: &Refusal<ErrorBody>) -> UpstreamError {
        let body = refusal.body.as_ref();
        let code = body.and_then(|b| b.error_code.as_deref());
        let kind = body.and_then(|b| b.kind.as_deref());
        let class = failure_class(refusal.status.as_u16(), code, kind);
        refusal.error(class, code)
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
                until: tokio::time::Instant::now() + AccessToken::lifetime(body.refresh_expires_in),
            });
        Ok(AccessToken {
            value: body.access_token,
            expires_in: AccessToken::lifetime(body.expires_in),
        })
    }

    /// Neonomics' id for `bank`: its own, opaque, from `GET /ics/v3/banks`, matched by BIC
    /// (the session's `bankId` "comes from the 'id' parameter in the response body from a call
    /// to the '/banks' API", <https://docs.neonomics.io/reference/createsession>). The list is
    /// read once and kept.
    async fn bank_id(&self, token: Option<&str>, bank: BankId) -> Result<String, UpstreamError> {
        if let Some(id) = self.bank_ids.lock().expect("bank ids").get(&bank) {
            return Ok(id.clone());
        }
        let list: Vec<BankBody> =
            Self::json(self.request(Method::GET, "/ics/v3/banks", token)).await?;
        let mut ids = self.bank_ids.lock().expect("bank ids");
        for known in BankId::ALL {
            if let Some(entry) = list.iter().find(|b| b.bic == known.bic()) {
                ids.insert(known, entry.id.clone());
            }
        }
        ids.get(&bank).cloned().ok_or_else(|| {
            UpstreamError::new(
                FailureClass::Unsupported,
                "Neonomics does not list the bank",
            )
        })
    }

    /// Opens a session at the bank for the user (`x-psu-id`), tries its accounts, and follows
    /// the 1426 that asks for consent to the link that returns the user's browser to the
    /// redirect URL.
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
            // The PSU's identity number. Neonomics requires it encrypted with the
            // application's Tink key and Base64-encoded
            // (https://docs.neonomics.io/docs/sensitive-end-user-data); that encryption is
            // still to come (issue 43), and the sandbox takes it as it comes.
            .header("x-psu-id", start.psu.expose())
            .json(
                &serde_json::json!({"bankId": self.bank_id(token.as_deref(), start.bank).await?}),
            );
        let session: Session = Self::json(request).await?;
        // Consent is asked for only as a 1426 instructs, through its link: "you first have to
        // attempt the request and then handle consent if necessary"
        // (https://docs.neonomics.io/docs/consent-authorization-and-sca).
        let attempt = self
            .request(Method::GET, "/ics/v3/accounts", token.as_deref())
            .header("x-session-id", &session.session_id);
        let response = attempt.send().await.map_err(|e| transport_error(&e))?;
        if response.status().is_success() {
            // A valid consent exists already: nothing for the user to approve.
            return Ok(StartedConsent {
                external_id: session.session_id,
                sca_redirect: start.redirect_url,
            });
        }
        let refusal = Refusal::<ErrorBody>::read(response).await;
        let consent_link = refusal
            .body
            .as_ref()
            .filter(|b| b.error_code.as_deref() == Some("1426"))
            .and_then(|b| b.links.first())
            .map(|link| link_path(&link.href));
        let Some(path) = consent_link else {
            return Err(Self::classify(&refusal));
        };
        let request = self
            .request(
                Method::GET,
                &format!("{path}?scope=accounts"),
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
                        owner_name: a.owner_name,
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
        // The balance types of <https://docs.neonomics.io/docs/iso-codes>: available first.
        let preferred = ["AVLB", "BOOK", "CLSG"];
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

/// A payment as Neonomics renders it on initiation, complete and status
/// (<https://docs.neonomics.io/reference/getpaymentbyid>).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    status: String,
}

/// Where a payment stands, by Neonomics' status codes
/// (<https://docs.neonomics.io/docs/iso-codes>), each named: one the page does not list is
/// not guessed at. A payment whose SCA is done is at least `Authorised` here, whatever the
/// bank made of it since: only the answer to complete, which must always be called
/// (<https://docs.neonomics.io/reference/completepayment>), settles it in bankgate.
fn payment_status(code: &str) -> Result<RemoteStatus, UpstreamError> {
    Ok(match code {
        // Received; waiting for the end user's authorisation; waiting for a second signer.
        "RCVD" | "NAUT" | "PATC" => RemoteStatus::PendingSca,
        // Authentication and validation passed: the bank waits for complete.
        "ACTC" => RemoteStatus::Authorised,
        // Accepted by the bank (technical checks, for settlement, with a change), pending or
        // held at the bank, settled at the debtor's or the creditor's side.
        "ACCP" | "ACSP" | "ACWC" | "PDNG" | "PRSY" | "ACSC" | "ACCC" => RemoteStatus::Completed,
        // Rejected; cancelled by the end user.
        "RJCT" | "CANC" => RemoteStatus::Rejected,
        _ => {
            return Err(UpstreamError::new(
                FailureClass::Server,
                "Neonomics answered a payment status its documentation does not list",
            ));
        }
    })
}

impl PaymentBody {
    fn remote(self) -> Result<RemotePayment, UpstreamError> {
        Ok(RemotePayment {
            provider: ProviderId::Neonomics,
            status: payment_status(&self.status)?,
            payment_id: self.payment_id,
            sca_redirect: None,
        })
    }
}

/// A link in an error object or an authorize answer: `{type, rel, href, meta}`.
#[derive(Deserialize)]
struct Link {
    href: String,
    #[serde(default)]
    meta: LinkMeta,
}

#[derive(Deserialize, Default)]
struct LinkMeta {
    id: Option<String>,
}

/// The payment product for an order, of those Neonomics offers
/// (<https://docs.neonomics.io/reference/completepayment>): a domestic transfer in kroner, or a
/// SEPA credit transfer in euro to an IBAN. Neonomics has none for a payment abroad in another
/// currency; the bank's own API may take it.
fn product(order: &PaymentOrder) -> Result<&'static str, UpstreamError> {
    let to_iban = !order.creditor_account.chars().all(|c| c.is_ascii_digit());
    match order.currency.as_str() {
        "NOK" if is_domestic(order) => Ok("domestic-transfer"),
        "EUR" if to_iban => Ok("sepa-credit"),
        _ => Err(UpstreamError::new(
            FailureClass::Unsupported,
            "Neonomics offers no payment product for this currency and creditor",
        )),
    }
}

impl NeonomicsClient {
    /// A request in the user's session, from the user's IP.
    fn in_session(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        account: &ProviderAccount,
        order: &PaymentOrder,
    ) -> RequestBuilder {
        self.request(method, path, token)
            .header("x-session-id", &account.consent_ref)
            .header("x-psu-ip-address", &order.psu_ip)
    }

    /// Initiates a payment as the payments guide walks it
    /// (<https://docs.neonomics.io/docs/payments-1>): the initiation answers 510 with errorCode
    /// 1428 and the authorize link when the bank asks for SCA (authorize, a call of its own,
    /// then answers the link the user follows). An initiation exempt from SCA answers the
    /// payment at once; it is still to be completed.
    async fn pay(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<RemotePayment, UpstreamError> {
        let product = product(&order)?;
        let Some(debtor_name) = &order.debtor_name else {
            // Required on every payment (<https://docs.neonomics.io/reference/domesticscheduledpayment>).
            return Err(UpstreamError::new(
                FailureClass::Unsupported,
                "no account holder's name for Neonomics' debtorName",
            ));
        };
        let body = serde_json::json!({
            "debtorAccount": {"iban": order.debtor_iban},
            "debtorName": debtor_name,
            "creditorAccount": creditor_ref(&order),
            "creditorName": order.creditor_name,
            "instrumentedAmount": order.amount.to_string(),
            "currency": order.currency,
            "endToEndIdentification": order.reference,
            // Either remittance is required; a transfer without a message carries its reference.
            "remittanceInformationUnstructured": order.remittance_info.as_deref().unwrap_or(&order.reference),
        });
        let path = format!("/ics/v3/payments/{product}");
        let request = self
            .in_session(Method::POST, &path, token.as_deref(), &account, &order)
            .header("x-redirect-url", &order.redirect_url)
            .json(&body);
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        if response.status().is_success() {
            let payment = read_success::<PaymentBody>(response).await?.remote()?;
            // Exempt from SCA: authorised as far as the user goes, and to be completed.
            return Ok(RemotePayment {
                status: match payment.status {
                    RemoteStatus::Rejected => RemoteStatus::Rejected,
                    _ => RemoteStatus::Authorised,
                },
                ..payment
            });
        }
        let refusal = Refusal::<ErrorBody>::read(response).await;
        if refusal.body.is_none() {
            // A 510 may be 1428, the payment created: one whose error object cannot be read
            // proves nothing.
            return Err(Self::classify(&refusal).maybe_delivered());
        }
        let Some(payment_id) = authorization_required(&refusal) else {
            return Err(Self::classify(&refusal));
        };
        // Neonomics holds the payment now, under this id. The SCA link is asked for once
        // that is recorded (`authorize_payment`): whatever happens to that call, the payment
        // is initiated, never to be sent again.
        Ok(RemotePayment {
            provider: ProviderId::Neonomics,
            payment_id,
            status: RemoteStatus::PendingSca,
            sca_redirect: None,
        })
    }

    /// The bank's SCA link for a payment
    /// (<https://docs.neonomics.io/reference/continueauth>).
    async fn authorize(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> Result<String, UpstreamError> {
        #[derive(Deserialize)]
        struct Authorization {
            links: Vec<Link>,
        }
        let product = product(&order)?;
        let path = format!("/ics/v3/payments/{product}/{payment_id}/authorize");
        let request = self.in_session(Method::GET, &path, token.as_deref(), &account, &order);
        let answer: Authorization = Self::json(request).await?;
        answer
            .links
            .into_iter()
            .next()
            .map(|link| link.href)
            .ok_or_else(|| UpstreamError::new(FailureClass::Server, "no authorization link"))
    }

    /// Completes a payment whose SCA was carried out
    /// (<https://docs.neonomics.io/reference/completepayment>); one the user has not
    /// authorised yet answers 1428 again, and is still waiting for SCA.
    async fn complete(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> Result<RemotePayment, UpstreamError> {
        let product = product(&order)?;
        let path = format!("/ics/v3/payments/{product}/{payment_id}/complete");
        let request = self
            .in_session(Method::POST, &path, token.as_deref(), &account, &order)
            .json(&serde_json::json!({}));
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        if response.status().is_success() {
            return read_success::<PaymentBody>(response).await?.remote();
        }
        let refusal = Refusal::<ErrorBody>::read(response).await;
        match authorization_required(&refusal) {
            Some(_) => Ok(RemotePayment {
                provider: ProviderId::Neonomics,
                payment_id,
                status: RemoteStatus::PendingSca,
                sca_redirect: None,
            }),
            None => Err(Self::classify(&refusal)),
        }
    }

    /// Reads a payment by its id (<https://docs.neonomics.io/reference/getpaymentbyid>).
    /// Neonomics offers no other way to find a payment: one whose initiation answer was lost
    /// is untraceable (see `Payments::resolve` for what that means for it).
    async fn find(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: Option<String>,
    ) -> Result<Lookup, UpstreamError> {
        let Some(payment_id) = payment_id else {
            return Ok(Lookup::Untraceable);
        };
        let product = product(&order)?;
        let path = format!("/ics/v3/payments/{product}/{payment_id}");
        let request = self.in_session(Method::GET, &path, token.as_deref(), &account, &order);
        let payment = Self::json::<PaymentBody>(request).await?.remote()?;
        Ok(Lookup::Found(payment))
    }

    /// Reads the bank's entry in Neonomics' bank list: reachable, and `AVAILABLE`.
    async fn bank_status(&self, token: Option<String>, bank: BankId) -> Result<(), UpstreamError> {
        let id = self.bank_id(token.as_deref(), bank).await?;
        let request = self.request(
            Method::GET,
            &format!("/ics/v3/banks/{id}"),
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
        payment_id: Option<String>,
    ) -> BoxFuture<'static, Result<Lookup, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.find(token, account, order, payment_id).await })
    }

    fn authorize_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<String, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.authorize(token, account, order, payment_id).await })
    }

    fn complete_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.complete(token, account, order, payment_id).await })
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
    use bankgate_actors::upstream::MAX_GRANT_LIFETIME;
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

    /// A token answer with lifetimes no token server means (2^64-1 seconds) is taken with
    /// both bounded to a day, instead of overflowing the deadline it sets: that overflow
    /// panicked the token request, and Neonomics was down until a restart.
    #[tokio::test]
    async fn a_token_answers_lifetimes_are_bounded() {
        use tokio::io::AsyncWriteExt as _;
        let address = crate::providers::answering_once(|mut socket| async move {
            let body = serde_json::json!({
                "access_token": "token", "expires_in": u64::MAX, "token_type": "Bearer",
                "refresh_token": "refresh", "refresh_expires_in": u64::MAX,
            })
            .to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        })
        .await;
        let mut settings = crate::settings::Settings::load(None, &Default::default())
            .unwrap()
            .providers
            .neonomics;
        settings.base_url = format!("http://{address}");
        let client = NeonomicsClient::new(&settings);
        let token = client.token().await.expect("a token");
        assert_eq!(token.expires_in, MAX_GRANT_LIFETIME);
        let until = (client.refresh.lock().unwrap().as_ref()).map(|r| r.until);
        assert!(until.is_some_and(|u| u <= tokio::time::Instant::now() + MAX_GRANT_LIFETIME));
    }

    /// Every status of https://docs.neonomics.io/docs/iso-codes, each named; one the page
    /// does not list is an error, not a guess.
    #[test]
    fn each_documented_payment_status_has_its_place() {
        let expected = [
            ("RCVD", RemoteStatus::PendingSca),
            ("NAUT", RemoteStatus::PendingSca),
            ("PATC", RemoteStatus::PendingSca),
            ("ACTC", RemoteStatus::Authorised),
            ("ACCP", RemoteStatus::Completed),
            ("ACSP", RemoteStatus::Completed),
            ("ACWC", RemoteStatus::Completed),
            ("PDNG", RemoteStatus::Completed),
            ("PRSY", RemoteStatus::Completed),
            ("ACSC", RemoteStatus::Completed),
            ("ACCC", RemoteStatus::Completed),
            ("RJCT", RemoteStatus::Rejected),
            ("CANC", RemoteStatus::Rejected),
        ];
        for (code, status) in expected {
            assert_eq!(payment_status(code).unwrap(), status, "{code}");
        }
        for code in ["ACFC", "PART", "rcvd", ""] {
            assert!(payment_status(code).is_err(), "{code}");
        }
    }

    /// Neonomics has no product for a payment abroad in kroner, nor for one without the
    /// holder's name it requires: refused before sending, for the bank's own API to take.
    #[test]
    fn a_payment_neonomics_has_no_product_for_is_unsupported() {
        let order = |currency: &str, creditor: &str| PaymentOrder {
            bank: BankId::Dnb,
            debtor_iban: "NO9386011117947".into(),
            debtor_name: Some("Ola Nordmann".into()),
            amount: Decimal::new(10_000, 2),
            currency: currency.into(),
            creditor_name: "Kari".into(),
            creditor_account: creditor.into(),
            remittance_info: None,
            reference: "r".into(),
            redirect_url: "https://drop.example".into(),
            psu_ip: "192.0.2.1".into(),
        };
        assert_eq!(
            product(&order("NOK", "86011117947")).unwrap(),
            "domestic-transfer"
        );
        assert_eq!(
            product(&order("NOK", "NO9386011117947")).unwrap(),
            "domestic-transfer"
        );
        assert_eq!(
            product(&order("EUR", "DE89370400440532013000")).unwrap(),
            "sepa-credit"
        );
        for (currency, creditor) in [
            ("NOK", "SE4550000000058398257466"),
            ("SEK", "SE4550000000058398257466"),
            ("EUR", "86011117947"),
        ] {
            let refused = product(&order(currency, creditor)).unwrap_err();
            assert_eq!(
                refused.class,
                FailureClass::Unsupported,
                "{currency} {creditor}"
            );
        }
    }

    #[test]
    fn only_neonomics_and_bank_errors_say_the_path_is_down() {
        // An unknown session (1003) is a client error: counted as the bank failing, a
        // fresh sandbox behind an old database read as `bank_down`.
        let bad = Some("BAD_REQUEST");
        assert_eq!(failure_class(510, Some("1003"), bad), FailureClass::Client);
        assert_eq!(failure_class(510, Some("1001"), bad), FailureClass::Client);
        assert_eq!(failure_class(510, Some("1004"), bad), FailureClass::Client);
        assert_eq!(failure_class(510, Some("1005"), bad), FailureClass::Client);
        assert_eq!(failure_class(510, Some("2006"), bad), FailureClass::Client);
        assert_eq!(
            failure_class(510, Some("1426"), Some("CONSENT")),
            FailureClass::Consent
        );
        assert_eq!(
            failure_class(510, Some("1426"), None),
            FailureClass::Consent
        );
        assert_eq!(
            failure_class(520, None, Some("FATAL")),
            FailureClass::Server
        );
        assert_eq!(
            failure_class(530, None, Some("FATAL")),
            FailureClass::Server
        );
        assert_eq!(
            failure_class(530, None, Some("NETWORK")),
            FailureClass::Network
        );
        assert_eq!(
            failure_class(520, None, Some("NETWORK")),
            FailureClass::Network
        );
        assert_eq!(failure_class(503, None, None), FailureClass::Server);
        assert_eq!(failure_class(404, None, None), FailureClass::Client);
        assert_eq!(failure_class(401, None, None), FailureClass::Credentials);
        assert_eq!(failure_class(429, None, None), FailureClass::RateLimited);
    }
}
