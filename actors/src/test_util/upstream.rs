//! `ScriptedUpstream`: a provider's API whose every answer the test decides.
//!
//! Each call kind answers, per bank, from a script the test may change at any moment
//! (`set_balance`, `set_probe`, …): answer, fail with an `UpstreamError`, answer after a while,
//! or hang until the script changes. The fake also counts every call it receives, per bank and
//! kind, so a test can assert what the bank actually saw ("exactly one call").
//!
//! Like a real provider it issues access tokens and refuses a call whose token it does not
//! know (401, `FailureClass::Credentials`), before any script: `revoke_tokens` makes it forget
//! the tokens it issued, which is how a provider rejects the token the gateway holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::sync::watch;

use crate::upstream::{
    AccessToken, Balance, BalanceCall, ConsentCall, ConsentStart, ConsentState, ConsentStatus,
    FailureClass, Lookup, PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment,
    RemoteStatus, StartedConsent, Upstream, UpstreamError,
};
use crate::{BankId, ProviderId};

/// The balance every account has until a test scripts another: 1 000.00 NOK.
pub const DEFAULT_BALANCE: Decimal = Decimal::from_parts(100_000, 0, 0, false, 2);

/// How long the tokens the fake issues are valid: long enough never to need renewal in a test.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How one kind of call to one bank behaves.
#[derive(Debug, Clone)]
pub enum Behaviour<T> {
    /// Answers at once.
    Answer(T),
    /// Fails at once.
    Fail(UpstreamError),
    /// Answers after the wait (on paused time, as soon as nothing else is left to run); the
    /// provider's per-attempt timeout ends it first if it is shorter.
    Slow(Duration, T),
    /// Answers nothing until the test changes a script, then follows the script as it stands
    /// (so a call hangs until the provider's timeout gives up on it, or until the test scripts
    /// the answer it should give).
    Hang,
    /// Panics, as an adapter with a bug would.
    Panic,
}

impl<T> Behaviour<T> {
    /// Fails with `class` and the HTTP `status` that goes with it.
    pub fn fail(class: FailureClass, status: u16) -> Behaviour<T> {
        let mut error = UpstreamError::new(class, format!("scripted {}", class.as_str()));
        error.status = Some(status);
        Behaviour::Fail(error)
    }
}

/// A kind of call that names a bank (authentication does not; see `authentications`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Balance,
    InitiatePayment,
    FindPayment,
    AuthorizePayment,
    CompletePayment,
    Probe,
    StartConsent,
    ConsentState,
    Accounts,
}

/// The fake provider. Cheap to clone; clones share scripts and counts.
#[derive(Clone)]
pub struct ScriptedUpstream {
    provider: ProviderId,
    inner: Arc<Inner>,
}

struct Inner {
    scripts: Mutex<Scripts>,
    /// Bumped by every script change, so hanging calls look at their script again.
    changed: watch::Sender<u64>,
}

/// What a call finds when it arrives; a bank without an entry is answered well (see
/// `ScriptedUpstream::new`).
#[derive(Default)]
struct Scripts {
    balance: HashMap<BankId, Behaviour<Decimal>>,
    initiate_payment: HashMap<BankId, Behaviour<RemoteStatus>>,
    find_payment: HashMap<BankId, Behaviour<Option<RemoteStatus>>>,
    probe: HashMap<BankId, Behaviour<()>>,
    consent_state: HashMap<BankId, Behaviour<ConsentState>>,
    authenticate: Option<Behaviour<Duration>>,
    calls: HashMap<(BankId, Call), usize>,
    authentications: usize,
    /// Tokens issued and not revoked: the only ones a call may carry.
    valid_tokens: HashSet<String>,
    tokens_issued: usize,
}

impl ScriptedUpstream {
    /// A provider that answers everything well until scripted otherwise: every balance is
    /// `DEFAULT_BALANCE`, payments are initiated (pending SCA) and never found, probes pass,
    /// authentication issues a fresh token.
    pub fn new(provider: ProviderId) -> ScriptedUpstream {
        ScriptedUpstream {
            provider,
            inner: Arc::new(Inner {
                scripts: Mutex::default(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// Sets how balance reads at `bank` answer: `Answer(amount)` is a balance of that amount.
    pub fn set_balance(&self, bank: BankId, behaviour: Behaviour<Decimal>) {
        self.change(|s| s.balance.insert(bank, behaviour));
    }

    /// Sets how payment initiations at `bank` answer: `Answer(status)` is the payment as
    /// the provider took it.
    pub fn set_initiate_payment(&self, bank: BankId, behaviour: Behaviour<RemoteStatus>) {
        self.change(|s| s.initiate_payment.insert(bank, behaviour));
    }

    /// Sets how payment look-ups at `bank` answer: `Answer(None)` proves it was never received.
    pub fn set_find_payment(&self, bank: BankId, behaviour: Behaviour<Option<RemoteStatus>>) {
        self.change(|s| s.find_payment.insert(bank, behaviour));
    }

    /// Sets how the synthetic health probe of the path to `bank` answers.
    pub fn set_probe(&self, bank: BankId, behaviour: Behaviour<()>) {
        self.change(|s| s.probe.insert(bank, behaviour));
    }

    /// Sets where the user's SCA left consents at `bank` (`Valid` until scripted otherwise).
    pub fn set_consent_state(&self, bank: BankId, behaviour: Behaviour<ConsentState>) {
        self.change(|s| s.consent_state.insert(bank, behaviour));
    }

    /// Sets how authentication answers; `Answer(lifetime)` issues a new token said to last
    /// that long.
    pub fn set_authenticate(&self, behaviour: Behaviour<Duration>) {
        self.change(|s| s.authenticate = Some(behaviour));
    }

    /// Forgets every token issued so far: calls carrying one are refused with 401 until the
    /// gateway authenticates again.
    pub fn revoke_tokens(&self) {
        self.change(|s| s.valid_tokens.clear());
    }

    /// Calls of `kind` received for `bank`, refused ones included.
    pub fn calls(&self, bank: BankId, kind: Call) -> usize {
        let scripts = self.scripts();
        scripts.calls.get(&(bank, kind)).copied().unwrap_or(0)
    }

    /// Authentications received.
    pub fn authentications(&self) -> usize {
        self.scripts().authentications
    }

    fn scripts(&self) -> MutexGuard<'_, Scripts> {
        self.inner
            .scripts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn change<R>(&self, edit: impl FnOnce(&mut Scripts) -> R) {
        edit(&mut self.scripts());
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Counts a call of `kind` to `bank` and checks its token, as the provider would before
    /// doing anything.
    fn receive(
        &self,
        bank: BankId,
        kind: Call,
        token: &Option<String>,
    ) -> Result<(), UpstreamError> {
        let mut scripts = self.scripts();
        *scripts.calls.entry((bank, kind)).or_default() += 1;
        match token {
            Some(token) if scripts.valid_tokens.contains(token) => Ok(()),
            _ => {
                let mut error = UpstreamError::new(FailureClass::Credentials, "token refused");
                error.status = Some(401);
                Err(error)
            }
        }
    }

    /// Plays the script `pick` finds, looking again whenever a hanging call is released.
    fn play<T>(
        &self,
        pick: impl Fn(&Scripts) -> Behaviour<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, UpstreamError>>
    where
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        Box::pin(async move {
            loop {
                let (behaviour, mut changed) = {
                    let scripts = inner
                        .scripts
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    (pick(&scripts), inner.changed.subscribe())
                };
                match behaviour {
                    Behaviour::Answer(answer) => return Ok(answer),
                    Behaviour::Fail(error) => return Err(error),
                    Behaviour::Slow(wait, answer) => {
                        tokio::time::sleep(wait).await;
                        return Ok(answer);
                    }
                    Behaviour::Panic => panic!("scripted panic"),
                    Behaviour::Hang => {
                        // The sender lives in `inner`, which this future holds.
                        let _ = changed.changed().await;
                    }
                }
            }
        })
    }
}

fn refused<T: Send + 'static>(
    error: UpstreamError,
) -> BoxFuture<'static, Result<T, UpstreamError>> {
    Box::pin(async move { Err(error) })
}

impl Upstream for ScriptedUpstream {
    fn provider(&self) -> ProviderId {
        self.provider
    }

    fn authenticate(&self) -> BoxFuture<'static, Result<Option<AccessToken>, UpstreamError>> {
        self.scripts().authentications += 1;
        let answer =
            self.play(|s| (s.authenticate.clone()).unwrap_or(Behaviour::Answer(TOKEN_LIFETIME)));
        let this = self.clone();
        Box::pin(async move {
            let expires_in = answer.await?;
            let mut scripts = this.scripts();
            scripts.tokens_issued += 1;
            let value = format!("{}-token-{}", this.provider.as_str(), scripts.tokens_issued);
            scripts.valid_tokens.insert(value.clone());
            Ok(Some(AccessToken { value, expires_in }))
        })
    }

    fn balance(
        &self,
        token: Option<String>,
        call: BalanceCall,
    ) -> BoxFuture<'static, Result<Balance, UpstreamError>> {
        if let Err(error) = self.receive(call.bank, Call::Balance, &token) {
            return refused(error);
        }
        let bank = call.bank;
        let amount = self.play(move |s| {
            (s.balance.get(&bank).cloned()).unwrap_or(Behaviour::Answer(DEFAULT_BALANCE))
        });
        let provider = self.provider;
        Box::pin(async move {
            Ok(Balance {
                amount: amount.await?,
                currency: "NOK".to_owned(),
                balance_type: "interimAvailable".to_owned(),
                provider,
                fetched_at: Utc::now(),
            })
        })
    }

    fn initiate_payment(
        &self,
        token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        if let Err(error) = self.receive(order.bank, Call::InitiatePayment, &token) {
            return refused(error);
        }
        let bank = order.bank;
        let status = self.play(move |s| {
            (s.initiate_payment.get(&bank).cloned())
                .unwrap_or(Behaviour::Answer(RemoteStatus::PendingSca))
        });
        let provider = self.provider;
        Box::pin(async move { Ok(remote_payment(provider, &order, status.await?)) })
    }

    fn find_payment(
        &self,
        token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
        _payment_id: Option<String>,
    ) -> BoxFuture<'static, Result<Lookup, UpstreamError>> {
        if let Err(error) = self.receive(order.bank, Call::FindPayment, &token) {
            return refused(error);
        }
        let bank = order.bank;
        let status = self
            .play(move |s| (s.find_payment.get(&bank).cloned()).unwrap_or(Behaviour::Answer(None)));
        let provider = self.provider;
        Box::pin(async move {
            Ok(match status.await? {
                Some(status) => Lookup::Found(remote_payment(provider, &order, status)),
                None => Lookup::Absent,
            })
        })
    }

    fn authorize_payment(
        &self,
        token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> BoxFuture<'static, Result<String, UpstreamError>> {
        if let Err(error) = self.receive(order.bank, Call::AuthorizePayment, &token) {
            return refused(error);
        }
        Box::pin(async move { Ok(format!("https://sca.example/{payment_id}")) })
    }

    fn complete_payment(
        &self,
        token: Option<String>,
        _account: ProviderAccount,
        order: PaymentOrder,
        _payment_id: String,
    ) -> BoxFuture<'static, Result<RemotePayment, UpstreamError>> {
        if let Err(error) = self.receive(order.bank, Call::CompletePayment, &token) {
            return refused(error);
        }
        let provider = self.provider;
        Box::pin(async move { Ok(remote_payment(provider, &order, RemoteStatus::Completed)) })
    }

    fn probe(
        &self,
        token: Option<String>,
        bank: BankId,
    ) -> BoxFuture<'static, Result<(), UpstreamError>> {
        if let Err(error) = self.receive(bank, Call::Probe, &token) {
            return refused(error);
        }
        self.play(move |s| (s.probe.get(&bank).cloned()).unwrap_or(Behaviour::Answer(())))
    }

    fn start_consent(
        &self,
        token: Option<String>,
        start: ConsentStart,
    ) -> BoxFuture<'static, Result<StartedConsent, UpstreamError>> {
        if let Err(error) = self.receive(start.bank, Call::StartConsent, &token) {
            return refused(error);
        }
        let external_id = format!("{}-consent-{}", self.provider.as_str(), start.psu.expose());
        Box::pin(async move {
            Ok(StartedConsent {
                sca_redirect: format!("https://sca.example/{external_id}"),
                external_id,
            })
        })
    }

    fn consent_state(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<ConsentStatus, UpstreamError>> {
        if let Err(error) = self.receive(consent.bank, Call::ConsentState, &token) {
            return refused(error);
        }
        let bank = consent.bank;
        let state = self.play(move |s| {
            (s.consent_state.get(&bank).cloned()).unwrap_or(Behaviour::Answer(ConsentState::Valid))
        });
        Box::pin(async move {
            Ok(ConsentStatus {
                state: state.await?,
                valid_until: None,
            })
        })
    }

    fn accounts(
        &self,
        token: Option<String>,
        consent: ConsentCall,
    ) -> BoxFuture<'static, Result<Vec<RemoteAccount>, UpstreamError>> {
        if let Err(error) = self.receive(consent.bank, Call::Accounts, &token) {
            return refused(error);
        }
        let account = RemoteAccount {
            id: format!("{}-account", consent.external_id),
            iban: "NO9386011117947".to_owned(),
            bban: Some("86011117947".to_owned()),
            name: None,
            currency: "NOK".to_owned(),
            owner_name: None,
        };
        Box::pin(async move { Ok(vec![account]) })
    }
}

/// The payment as the provider reports it, its id derived from bankgate's reference.
fn remote_payment(
    provider: ProviderId,
    order: &PaymentOrder,
    status: RemoteStatus,
) -> RemotePayment {
    RemotePayment {
        provider,
        payment_id: format!("{}-{}", provider.as_str(), order.reference),
        status,
        sca_redirect: (status == RemoteStatus::PendingSca)
            .then(|| format!("https://sca.example/{}", order.reference)),
    }
}
