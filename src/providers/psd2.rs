//! The client of the banks' own NextGenPSD2 APIs: consents, accounts, balances, payments.
//!
//! In production each bank identifies bankgate by its eIDAS certificate on the TLS connection;
//! there is no token to manage, so `authenticate` returns none.

use std::collections::BTreeMap;
use std::sync::Arc;

use bankgate_actors::upstream::{
    AccessToken, Balance, BalanceCall, ConsentCall, ConsentStart, ConsentState, ConsentStatus,
    FailureClass, Lookup, PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment,
    RemoteStatus, StartedConsent, Upstream, UpstreamError,
};
use bankgate_actors::{BankId, ProviderId};
use chrono::{NaiveDate, Utc};
use futures_util::future::BoxFuture;
use reqwest::{Method, RequestBuilder, Response};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    BaseUrl, Refusal, creditor_ref, http_client, is_domestic, read_success, reference_query,
    remote_status, transport_error,
};
use crate::settings::Psd2Settings;

/// How long a consent is asked for, and how many unattended reads a day it allows.
const CONSENT_DAYS: i64 = 90;
const FREQUENCY_PER_DAY: u32 = 4;
/// The consent id the health probe asks about: one no bank ever issues.
const PROBE_CONSENT: &str = "bankgate-health-probe";

#[derive(Clone)]
pub struct Psd2Client {
    http: reqwest::Client,
    bank_urls: Arc<BTreeMap<BankId, BaseUrl>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TppMessage {
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    tpp_messages: Vec<TppMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Amount {
    amount: Decimal,
    currency: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BalanceEntry {
    balance_amount: Amount,
    balance_type: String,
}

#[derive(Deserialize)]
struct BalancesBody {
    balances: Vec<BalanceEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountEntry {
    resource_id: String,
    iban: String,
    bban: Option<String>,
    name: Option<String>,
    currency: String,
    #[serde(default)]
    owner_name: Option<String>,
}

#[derive(Deserialize)]
struct AccountsBody {
    accounts: Vec<AccountEntry>,
}

impl Psd2Client {
    pub fn new(settings: &Psd2Settings) -> Arc<Psd2Client> {
        let bank_urls = settings
            .bank_urls
            .iter()
            .map(|(bank, url)| (*bank, BaseUrl::parse(url)))
            .collect();
        Arc::new(Psd2Client {
            http: http_client(settings.timeout),
            bank_urls: Arc::new(bank_urls),
        })
    }

    fn request(
        &self,
        method: Method,
        bank: BankId,
        path: &str,
    ) -> Result<RequestBuilder, UpstreamError> {
        let base = self
            .bank_urls
            .get(&bank)
            .ok_or_else(|| UpstreamError::new(FailureClass::Client, "no PSD2 URL for the bank"))?;
        // NextGenPSD2 wants a UUID per request.
        Ok(self
            .http
            .request(method, base.join(path))
            .header("x-request-id", uuid::Uuid::new_v4().to_string()))
    }

    /// Classifies a NextGenPSD2 error answer by status and `tppMessages` code.
    async fn failure(response: Response) -> UpstreamError {
        let refusal = Refusal::<ErrorBody>::read(response).await;
        let code = refusal
            .body
            .as_ref()
            .and_then(|b| b.tpp_messages.first())
            .map(|m| m.code.clone());
        let consent = code.as_deref().is_some_and(|c| c.starts_with("CONSENT_"));
        let class = match refusal.status.as_u16() {
            401 | 403 if consent => FailureClass::Consent,
            401 => FailureClass::Credentials,
            403 if code.as_deref() == Some("RESOURCE_UNKNOWN") => FailureClass::Client,
            403 => FailureClass::Credentials,
            429 => FailureClass::RateLimited,
            500..=599 => FailureClass::Server,
            _ => FailureClass::Client,
        };
        refusal.error(class, code.as_deref())
    }

    async fn json<T: serde::de::DeserializeOwned>(
        request: RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        if !response.status().is_success() {
            return Err(Self::failure(response).await);
        }
        read_success(response).await
    }

    /// Creates a consent for all accounts of the user (`PSU-ID`) at the bank.
    async fn create_consent(&self, start: ConsentStart) -> Result<StartedConsent, UpstreamError> {
        #[derive(Deserialize)]
        struct Href {
            href: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Links {
            sca_redirect: Href,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            consent_id: String,
            #[serde(rename = "_links")]
            links: Links,
        }
        let valid_until: NaiveDate =
            (Utc::now() + chrono::Duration::days(CONSENT_DAYS)).date_naive();
        let body = serde_json::json!({
            "access": {"allPsd2": "allAccounts"},
            "recurringIndicator": true,
            "validUntil": valid_until,
            "frequencyPerDay": FREQUENCY_PER_DAY,
            "combinedServiceIndicator": false,
        });
        let request = self
            .request(Method::POST, start.bank, "/consents")?
            .header("psu-id", start.psu.expose())
            .header("tpp-redirect-uri", &start.redirect_url)
            .json(&body);
        let created: Created = Self::json(request).await?;
        Ok(StartedConsent {
            external_id: created.consent_id,
            sca_redirect: created.links.sca_redirect.href,
        })
    }

    /// Returns the consent's state and, when valid, how long it lasts.
    async fn consent_status(&self, consent: ConsentCall) -> Result<ConsentStatus, UpstreamError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct View {
            consent_status: String,
            valid_until: Option<NaiveDate>,
        }
        let path = format!("/consents/{}", consent.external_id);
        let view: View = Self::json(self.request(Method::GET, consent.bank, &path)?).await?;
        let until = view
            .valid_until
            .and_then(|d| d.and_hms_opt(23, 59, 59))
            .map(|t| t.and_utc());
        let state = match view.consent_status.as_str() {
            "valid" => ConsentState::Valid,
            "received" | "partiallyAuthorised" => ConsentState::Pending,
            _ => ConsentState::Rejected,
        };
        Ok(ConsentStatus {
            state,
            valid_until: until,
        })
    }

    /// Lists the accounts a consent opens; the user's IP makes the read attended.
    async fn consent_accounts(
        &self,
        consent: ConsentCall,
    ) -> Result<Vec<RemoteAccount>, UpstreamError> {
        let request = self
            .request(Method::GET, consent.bank, "/accounts")?
            .header("consent-id", &consent.external_id)
            .header("psu-ip-address", &consent.psu_ip);
        let body: AccountsBody = Self::json(request).await?;
        Ok(body
            .accounts
            .into_iter()
            .map(|a| RemoteAccount {
                id: a.resource_id,
                iban: a.iban,
                bban: a.bban,
                name: a.name,
                currency: a.currency,
                owner_name: a.owner_name,
            })
            .collect())
    }

    async fn read_balance(&self, call: BalanceCall) -> Result<Balance, UpstreamError> {
        let path = format!("/accounts/{}/balances", call.account.account_id);
        let mut request = self
            .request(Method::GET, call.bank, &path)?
            .header("consent-id", &call.account.consent_ref);
        if let Some(ip) = call.psu_ip {
            request = request.header("psu-ip-address", ip.to_string());
        }
        let body: BalancesBody = Self::json(request).await?;
        let preferred = ["interimAvailable", "closingBooked", "expected"];
        let chosen = preferred
            .iter()
            .find_map(|kind| body.balances.iter().find(|b| b.balance_type == *kind))
            .or(body.balances.first())
            .ok_or_else(|| UpstreamError::new(FailureClass::Server, "no balance in the answer"))?;
        Ok(Balance {
            amount: chosen.balance_amount.amount,
            currency: chosen.balance_amount.currency.clone(),
            balance_type: chosen.balance_type.clone(),
            provider: ProviderId::Psd2,
            fetched_at: Utc::now(),
        })
    }
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PaymentLinks {
    sca_redirect: Option<Href>,
}

/// A payment as NextGenPSD2 renders it on initiation and in the reference lookup.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    transaction_status: String,
    #[serde(rename = "_links", default)]
    links: PaymentLinks,
}

impl PaymentBody {
    fn remote(self) -> RemotePayment {
        let status = remote_status(&self.transaction_status);
        RemotePayment {
            provider: ProviderId::Psd2,
            payment_id: self.payment_id,
            status,
            sca_redirect: self
                .links
                .sca_redirect
                .map(|l| l.href)
                .filter(|_| status == RemoteStatus::PendingSca),
        }
    }
}

fn product(order: &PaymentOrder) -> &'static str {
    if is_domestic(order) {
        "norwegian-domestic-credit-transfers"
    } else {
        "norwegian-cross-border-credit-transfers"
    }
}

impl Psd2Client {
    async fn pay(&self, order: PaymentOrder) -> Result<RemotePayment, UpstreamError> {
        let body = serde_json::json!({
            "endToEndIdentification": order.reference,
            "debtorAccount": {"iban": order.debtor_iban},
            "instructedAmount": {"currency": order.currency, "amount": order.amount.to_string()},
            "creditorAccount": creditor_ref(&order),
            "creditorName": order.creditor_name,
            "remittanceInformationUnstructured": order.remittance_info,
        });
        let request = self
            .request(
                Method::POST,
                order.bank,
                &format!("/payments/{}", product(&order)),
            )?
            .header("psu-ip-address", &order.psu_ip)
            .header("tpp-redirect-uri", &order.redirect_url)
            .json(&body);
        Ok(Self::json::<PaymentBody>(request).await?.remote())
    }

    /// Reads a payment's status by its id (NextGenPSD2's `GET …/payments/{product}/{id}/status`).
    async fn status(
        &self,
        order: &PaymentOrder,
        payment_id: String,
    ) -> Result<RemotePayment, UpstreamError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Status {
            transaction_status: String,
        }
        let path = format!("/payments/{}/{payment_id}/status", product(order));
        let status: Status = Self::json(self.request(Method::GET, order.bank, &path)?).await?;
        Ok(RemotePayment {
            provider: ProviderId::Psd2,
            payment_id,
            status: remote_status(&status.transaction_status),
            sca_redirect: None,
        })
    }

    async fn find(
        &self,
        order: PaymentOrder,
        payment_id: Option<String>,
    ) -> Result<Lookup, UpstreamError> {
        #[derive(Deserialize)]
        struct Found {
            payments: Vec<PaymentBody>,
        }
        if let Some(payment_id) = payment_id {
            return Ok(Lookup::Found(self.status(&order, payment_id).await?));
        }
        let request = self.request(
            Method::GET,
            order.bank,
            &format!("/payments/{}?{}", product(&order), reference_query(&order)),
        )?;
        let found: Found = Self::json(request).await?;
        Ok(match found.payments.into_iter().next() {
            Some(payment) => Lookup::Found(payment.remote()),
            None => Lookup::Absent,
        })
    }

    /// Asks the bank for the status of a consent it never issued. NextGenPSD2 has no health
    /// endpoint; a well-formed `CONSENT_UNKNOWN` proves the bank's API, its consent service
    /// and bankgate's access to them work, without touching any user's consent.
    async fn consent_service(&self, bank: BankId) -> Result<(), UpstreamError> {
        let request = self.request(
            Method::GET,
            bank,
            &format!("/consents/{PROBE_CONSENT}/status"),
        )?;
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        if response.status().is_success() {
            return Ok(());
        }
        match Self::failure(response).await {
            error if error.class == FailureClass::Consent => Ok(()),
            error => Err(error),
        }
    }
}

impl Upstream for Psd2Client {
    fn provider(&self) -> ProviderId {
        ProviderId::Psd2
    }

    fn authenticate(&self) -> BoxFuture<'static, Result<Option<AccessToken>, UpstreamError>> {
        Box::pin(async { Ok(None) })
    }

    fn balance(
        &self,
        _token: Option<String>,
        call: BalanceCall,
    ) -> BoxFuture<'static, Result<Balance, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.read_balance(call).await })
    }

    fn initiate_payment(
        &self,
        _token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.pay(order).await })
    }

    fn find_payment(
        &self,
        _token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
        payment_id: Option<String>,
    ) -> BoxFuture<'static, Result<Lookup, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.find(order, payment_id).await })
    }

    /// NextGenPSD2 gives the SCA link in the initiation's answer (`_links.scaRedirect`); it
    /// has no call of its own for it.
    fn authorize_payment(
        &self,
        _token: Option<String>,
        _account: ProviderAccount,
        _order: PaymentOrder,
        _payment_id: String,
    ) -> BoxFuture<'static, Result<String, UpstreamError>> {
        Box::pin(async {
            Err(UpstreamError::new(
                FailureClass::Unsupported,
                "the SCA link comes with the initiation",
            ))
        })
    }

    /// NextGenPSD2 has no completion step: the bank executes a payment on its SCA. Completing
    /// reads where it stands.
    fn complete_payment(
        &self,
        _token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.status(&order, payment_id).await })
    }

    fn probe(
        &self,
        _token: Option<String>,
        bank: BankId,
    ) -> BoxFuture<'static, Result<(), UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.consent_service(bank).await })
    }

    fn start_consent(
        &self,
        _token: Option<String>,
        start: ConsentStart,
    ) -> BoxFuture<'static, Result<StartedConsent, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.create_consent(start).await })
    }

    fn consent_state(
        &self,
        _token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<ConsentStatus, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.consent_status(consent).await })
    }

    fn accounts(
        &self,
        _token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<Vec<RemoteAccount>, UpstreamError>> {
        let this = self.clone();
        Box::pin(async move { this.consent_accounts(consent).await })
    }
}
