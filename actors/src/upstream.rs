//! The ports to the outside world: what the actors need from a provider's API and from the
//! database. `src/` implements them over HTTP and PostgreSQL; tests may implement them too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::national_id::NationalId;
use crate::{BankId, ProviderId};

/// How one provider addresses one of the user's accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccount {
    pub provider: ProviderId,
    /// The provider's id for the account.
    pub account_id: String,
    /// What the provider's consent is called there: the Neonomics session or the PSD2 consent.
    pub consent_ref: String,
}

/// One of the user's bank accounts as bankgate knows it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: Uuid,
    pub bank: BankId,
    pub iban: String,
    pub name: Option<String>,
    pub currency: String,
    pub consent_expires_at: Option<DateTime<Utc>>,
    /// The account at each provider with a valid consent.
    pub accounts: Vec<ProviderAccount>,
    /// The last balance persisted, so a restarted gateway can still answer.
    pub last_balance: Option<Balance>,
}

impl Connection {
    pub fn account_at(&self, provider: ProviderId) -> Option<&ProviderAccount> {
        self.accounts.iter().find(|a| a.provider == provider)
    }
}

/// A balance as a provider reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub amount: Decimal,
    pub currency: String,
    pub balance_type: String,
    pub provider: ProviderId,
    pub fetched_at: DateTime<Utc>,
}

/// One balance read at one provider.
#[derive(Debug, Clone)]
pub struct BalanceCall {
    pub bank: BankId,
    pub account: ProviderAccount,
    /// The user's IP when the user is present (an attended read under PSD2).
    pub psu_ip: Option<IpAddr>,
    pub request_id: String,
}

/// Why an upstream call failed, in the runbook's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// No answer within the per-attempt timeout.
    Timeout,
    /// 5xx (and Neonomics' 520/530): the provider or bank failed.
    Server,
    /// 429: slow down.
    RateLimited,
    /// 401/403 on the provider's own authentication: our credentials are bad.
    Credentials,
    /// Refused, reset, unreachable: the network path failed.
    Network,
    /// The user's consent is expired or invalid: the user's problem, not the bank's.
    Consent,
    /// Another 4xx: a request the provider considers wrong.
    Client,
    /// The provider offers nothing for this request (no payment product for it, a field it
    /// requires that bankgate lacks): refused before sending; another provider may take it.
    Unsupported,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Timeout,
        FailureClass::Server,
        FailureClass::RateLimited,
        FailureClass::Credentials,
        FailureClass::Network,
        FailureClass::Consent,
        FailureClass::Client,
        FailureClass::Unsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Server => "server",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Credentials => "credentials",
            FailureClass::Network => "network",
            FailureClass::Consent => "consent",
            FailureClass::Client => "client",
            FailureClass::Unsupported => "unsupported",
        }
    }

    /// Whether the failure says the path to the bank is unhealthy (counts toward breakers).
    pub fn is_path_failure(self) -> bool {
        !matches!(
            self,
            FailureClass::Consent | FailureClass::Client | FailureClass::Unsupported
        )
    }

    /// Whether a read that failed this way may be retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::Timeout
                | FailureClass::Server
                | FailureClass::Network
                | FailureClass::RateLimited
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{} failure{}: {detail}", class.as_str(), status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct UpstreamError {
    pub class: FailureClass,
    pub status: Option<u16>,
    /// How long the provider asked us to wait (`Retry-After`, `X-RateLimit-Reset`).
    pub retry_after: Option<Duration>,
    /// Safe to log: never tokens, account numbers or personal data.
    pub detail: String,
    /// Whether the request may have reached the provider without an answer coming back
    /// (a timeout or a connection broken after sending): a payment's outcome is then unknown.
    pub maybe_delivered: bool,
}

impl UpstreamError {
    pub fn new(class: FailureClass, detail: impl Into<String>) -> UpstreamError {
        UpstreamError {
            class,
            status: None,
            retry_after: None,
            detail: detail.into(),
            maybe_delivered: false,
        }
    }

    /// Whether the failure proves the provider did not carry the request out: the request
    /// never left, or the provider's answer, read in full, refused it (a 4xx, a provider's
    /// own status for a client error such as Neonomics' 510, or 503). A success status whose
    /// body could not be read proves nothing, nor does any other 5xx.
    pub fn proves_not_carried_out(&self) -> bool {
        if self.maybe_delivered {
            return false;
        }
        match self.status {
            Some(status) => status == 503 || self.class != FailureClass::Server,
            None => true,
        }
    }

    /// Marks the request as possibly received by the provider.
    pub fn maybe_delivered(mut self) -> UpstreamError {
        self.maybe_delivered = true;
        self
    }
}

/// An access token from a provider's OAuth2 client-credentials grant.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: String,
    pub expires_in: Duration,
}

/// The longest a provider's grant (an access or a refresh token) is trusted for, whatever
/// the provider says: a wrong or hostile `expires_in` can then neither overflow a deadline
/// nor keep a token in use for longer than a day.
pub const MAX_GRANT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl AccessToken {
    /// A grant's lifetime as a provider states it, in seconds, bounded by
    /// `MAX_GRANT_LIFETIME`.
    pub fn lifetime(seconds: u64) -> Duration {
        Duration::from_secs(seconds).min(MAX_GRANT_LIFETIME)
    }
}

/// A payment to initiate at the user's bank; the provider's account id for the debtor
/// account comes with each call.
#[derive(Debug, Clone)]
pub struct PaymentOrder {
    pub bank: BankId,
    pub debtor_iban: String,
    /// The account holder's name, where a provider listed it (Neonomics requires it).
    pub debtor_name: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    pub creditor_name: String,
    /// An IBAN or a Norwegian account number (BBAN).
    pub creditor_account: String,
    pub remittance_info: Option<String>,
    /// bankgate's reference for the payment, sent as `endToEndIdentification`; how a payment
    /// whose initiation outcome is unknown is found again.
    pub reference: String,
    /// Where the bank sends the user's browser after SCA.
    pub redirect_url: String,
    pub psu_ip: String,
}

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteStatus {
    /// Received, waiting for the user's SCA.
    PendingSca,
    /// The user approved it; the provider waits for bankgate to complete it (Neonomics'
    /// complete call, which must always be made).
    Authorised,
    Completed,
    Rejected,
}

/// A payment as the provider knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePayment {
    pub provider: ProviderId,
    pub payment_id: String,
    pub status: RemoteStatus,
    /// The link the user follows to approve the payment, while it waits for SCA.
    pub sca_redirect: Option<String>,
}

/// What asking a provider for a payment proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(RemotePayment),
    /// The provider answered that it holds no such payment.
    Absent,
    /// The provider has no way to find it: it offers no look-up by bankgate's reference,
    /// and the payment's own id never reached bankgate. Proves nothing either way.
    Untraceable,
}

/// A consent to ask a provider for: the user (`psu`, by national identity number) at `bank`,
/// whose browser comes back to `redirect_url` after the provider's SCA.
#[derive(Debug, Clone)]
pub struct ConsentStart {
    pub bank: BankId,
    pub psu: NationalId,
    pub redirect_url: String,
}

/// A consent started at a provider, waiting for the user's SCA.
#[derive(Debug, Clone)]
pub struct StartedConsent {
    /// The provider's handle for it: the PSD2 consent id or the Neonomics session id.
    pub external_id: String,
    pub sca_redirect: String,
}

/// One consent at one provider, asked about while the user is present.
#[derive(Debug, Clone)]
pub struct ConsentCall {
    pub bank: BankId,
    /// The provider's handle for it (`StartedConsent::external_id`).
    pub external_id: String,
    pub psu_ip: String,
}

/// Where the provider's SCA left a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    Valid,
    Rejected,
    Pending,
}

/// Where a consent stands at a provider and, when the provider says, until when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentStatus {
    pub state: ConsentState,
    pub valid_until: Option<DateTime<Utc>>,
}

/// An account a provider lists under a consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAccount {
    pub id: String,
    pub iban: String,
    pub bban: Option<String>,
    pub name: Option<String>,
    pub currency: String,
    /// The account holder's name, where the provider lists it.
    pub owner_name: Option<String>,
}

/// A provider's API, as the actors use it.
pub trait Upstream: Send + Sync + 'static {
    fn provider(&self) -> ProviderId;
    /// Obtains an access token; `None` for providers that need none.
    fn authenticate(&self) -> BoxFuture<'static, Result<Option<AccessToken>, UpstreamError>>;
    /// Reads one balance with `token` (from `authenticate`).
    fn balance(
        &self,
        token: Option<String>,
        call: BalanceCall,
    ) -> BoxFuture<'static, Result<Balance, UpstreamError>>;
    /// Initiates a payment. Never retried: a failure with `maybe_delivered` leaves the
    /// outcome unknown until `find_payment` settles it, if the provider can tell.
    fn initiate_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>>;
    /// Asks for the order's payment: by the provider's `payment_id` when bankgate learnt it,
    /// else by bankgate's reference where the provider offers that.
    fn find_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: Option<String>,
    ) -> BoxFuture<'static, Result<Lookup, UpstreamError>>;
    /// The link the user follows to approve a payment waiting for SCA, where the provider
    /// gives it in a call of its own after the initiation (Neonomics' authorize).
    fn authorize_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<String, UpstreamError>>;
    /// Completes a payment the user authorised, where the provider needs that step, and
    /// answers where it then stands; safe to repeat until it is answered.
    fn complete_payment(
        &self,
        token: Option<String>,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>>;
    /// Starts a consent, to be approved by the user at the link it answers with. Never
    /// retried: each start opens a new consent at the provider.
    fn start_consent(
        &self,
        token: Option<String>,
        start: ConsentStart,
    ) -> BoxFuture<'static, Result<StartedConsent, UpstreamError>>;
    /// Where the user's SCA left a consent and, when the provider says, until when it holds.
    fn consent_state(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<ConsentStatus, UpstreamError>>;
    /// The accounts a valid consent opens.
    fn accounts(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<Vec<RemoteAccount>, UpstreamError>>;
    /// The synthetic health probe: checks that the path to `bank` answers, with bankgate's
    /// own credentials and no user's consent or data (so it spends no PSD2 read allowance).
    fn probe(
        &self,
        token: Option<String>,
        bank: BankId,
    ) -> BoxFuture<'static, Result<(), UpstreamError>>;
}

/// PostgreSQL failed or answered something unexpected. It keeps what went wrong beneath, so
/// a log line can show the whole chain (`std::error::Error::source`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("database: {what}")]
pub struct StoreError {
    what: String,
    #[source]
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error the store found itself (an unexpected value, a missing row).
    pub fn new(what: impl Into<String>) -> StoreError {
        StoreError {
            what: what.into(),
            cause: None,
        }
    }

    /// An error of the database client or the pool.
    pub fn caused_by(cause: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError {
            what: cause.to_string(),
            cause: Some(Arc::new(cause)),
        }
    }
}

/// What the actors keep in PostgreSQL.
pub trait Store: Send + Sync + 'static {
    /// The user's connections with their provider accounts and last balances.
    fn connections(&self, user: &str) -> BoxFuture<'static, Result<Vec<Connection>, StoreError>>;
    /// Persists the latest balances of connections (one per connection), skipping any
    /// connection removed meanwhile and any balance older than the one stored.
    fn save_balances(
        &self,
        balances: Vec<(Uuid, Balance)>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Marks the user's consent at `provider` for this connection as expired.
    fn consent_expired(
        &self,
        connection: Uuid,
        provider: ProviderId,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
}
