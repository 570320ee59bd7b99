//! The provider's call path, in the caller's task: the quota limiter, the concurrency cap,
//! the token (renewed once when refused), retries within the budget and the call log.

use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use tokio::time::Instant;

use crate::metrics;
use crate::upstream::{
    Balance, BalanceCall, ConsentCall, ConsentStart, ConsentStatus, FailureClass, Lookup,
    PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment, StartedConsent, UpstreamError,
};
use crate::{BankId, Service};

use super::ProviderHandle;

impl ProviderHandle {
    /// Reads a balance, retrying retryable failures when `retries` allows (the caller turns
    /// retries off when a failover path exists: another provider is the better retry).
    pub async fn balance(
        &self,
        call: BalanceCall,
        retries: bool,
    ) -> Result<Balance, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.retrying(call.bank, Service::Aisp, retries, |token| {
            upstream.balance(token, call.clone())
        })
        .await
    }

    /// A call that changes nothing at the provider, retried on retryable failures when
    /// `retries` allows, within the retry budget.
    async fn retrying<T, F>(
        &self,
        bank: BankId,
        service: Service,
        retries: bool,
        call: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(Option<String>) -> BoxFuture<'static, Result<T, UpstreamError>>,
    {
        let config = &self.shared.config;
        self.shared
            .budget
            .lock()
            .expect("budget")
            .record_call(Instant::now());
        let mut retry = 0;
        loop {
            let error = match self.attempt(bank, service, &call).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let may_retry = retries
                && error.class.is_retryable()
                && retry < config.retry.max_retries
                && error
                    .retry_after
                    .is_none_or(|wait| wait <= config.retry.first_backoff * 4)
                && self
                    .shared
                    .budget
                    .lock()
                    .expect("budget")
                    .try_retry(Instant::now());
            if !may_retry {
                return Err(error);
            }
            retry += 1;
            ::metrics::counter!(metrics::RETRIES, "provider" => self.id().as_str(), "bank" => bank.as_str())
                .increment(1);
            tokio::time::sleep(config.retry.wait_before(retry, error.retry_after)).await;
        }
    }

    /// Initiates a payment: one attempt, never retried (a second send could pay twice).
    pub async fn initiate_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<RemotePayment, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(order.bank, Service::Pisp, |token| {
            upstream.initiate_payment(token, account.clone(), order.clone())
        })
        .await
    }

    /// Asks for a payment, by the provider's id when known, else by bankgate's reference.
    pub async fn find_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: Option<String>,
    ) -> Result<Lookup, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(order.bank, Service::Pisp, |token| {
            upstream.find_payment(token, account.clone(), order.clone(), payment_id.clone())
        })
        .await
    }

    /// The link the user follows to approve a payment: asking for it changes nothing, so it
    /// is retried like a read; the user is waiting for it.
    pub async fn authorize_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> Result<String, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.retrying(order.bank, Service::Pisp, true, |token| {
            upstream.authorize_payment(token, account.clone(), order.clone(), payment_id.clone())
        })
        .await
    }

    /// Completes a payment the user authorised: one attempt; the caller repeats it until
    /// it is answered.
    pub async fn complete_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
        payment_id: String,
    ) -> Result<RemotePayment, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(order.bank, Service::Pisp, |token| {
            upstream.complete_payment(token, account.clone(), order.clone(), payment_id.clone())
        })
        .await
    }

    /// Starts a consent for the user: one attempt, never retried (each start opens a new
    /// consent at the provider).
    pub async fn start_consent(
        &self,
        start: ConsentStart,
    ) -> Result<StartedConsent, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(start.bank, Service::Aisp, |token| {
            upstream.start_consent(token, start.clone())
        })
        .await
    }

    /// Asks where the user's SCA left a consent: one attempt, the user is waiting.
    pub async fn consent_state(
        &self,
        consent: ConsentCall,
    ) -> Result<ConsentStatus, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(consent.bank, Service::Aisp, |token| {
            upstream.consent_state(token, consent.clone())
        })
        .await
    }

    /// Lists the accounts a consent opens: one attempt, the user is waiting.
    pub async fn accounts(
        &self,
        consent: ConsentCall,
    ) -> Result<Vec<RemoteAccount>, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(consent.bank, Service::Aisp, |token| {
            upstream.accounts(token, consent.clone())
        })
        .await
    }

    /// The synthetic health probe of the path to `bank`: one attempt, never retried.
    pub async fn probe(&self, bank: BankId) -> Result<(), UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(bank, Service::Aisp, |token| upstream.probe(token, bank))
            .await
    }

    /// One attempt: quota, concurrency, token, the call, and one token refresh when the
    /// provider rejects the token (a rejected call was not carried out, so sending it again
    /// is safe even for a payment).
    async fn attempt<T, F>(
        &self,
        bank: BankId,
        service: Service,
        call: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(Option<String>) -> BoxFuture<'static, Result<T, UpstreamError>>,
    {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.timeout;
        self.wait_for_quota(deadline).await?;
        let _permit = tokio::time::timeout_at(deadline, self.shared.concurrency.acquire())
            .await
            .map_err(|_| {
                UpstreamError::new(FailureClass::Timeout, "provider concurrency cap reached")
            })?
            .expect("semaphore is never closed");
        let token = match self.token().await {
            Ok(token) => token,
            Err(error) => {
                // No token, no call: the path is down as surely as if the call had failed, and
                // the failure rate, the alerts and the diagnosis must see it.
                self.record(bank, service, Some(error.class), Duration::ZERO);
                return Err(error);
            }
        };
        let result = self
            .call_once(bank, service, deadline, call(token.clone()))
            .await;
        match result {
            Err(error) if error.class == FailureClass::Credentials && token.is_some() => {
                let fresh = self.replace_token(token).await?;
                self.call_once(bank, service, Instant::now() + config.timeout, call(fresh))
                    .await
            }
            other => other,
        }
    }

    async fn call_once<T>(
        &self,
        bank: BankId,
        service: Service,
        deadline: Instant,
        future: BoxFuture<'static, Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = match tokio::time::timeout_at(deadline, future).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::new(
                FailureClass::Timeout,
                "no answer within the timeout",
            )
            .maybe_delivered()),
        };
        self.record(
            bank,
            service,
            result.as_ref().err().map(|e| e.class),
            started.elapsed(),
        );
        result
    }

    /// Counts one call's outcome in the call log and the metrics.
    fn record(
        &self,
        bank: BankId,
        service: Service,
        failure: Option<FailureClass>,
        elapsed: Duration,
    ) {
        self.shared
            .calls
            .record(bank, self.id(), service, failure, elapsed);
        metrics::record_upstream_call(self.id(), bank, service, failure, elapsed);
        if failure == Some(FailureClass::RateLimited) {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "upstream", "provider" => self.id().as_str()).increment(1);
        }
    }

    /// Waits for the provider's quota, failing as rate limited if that takes past `deadline`.
    async fn wait_for_quota(&self, deadline: Instant) -> Result<(), UpstreamError> {
        loop {
            match self.shared.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if Instant::now() + wait > deadline {
                        ::metrics::counter!(metrics::RATE_LIMITED, "source" => "local", "provider" => self.id().as_str())
                            .increment(1);
                        let mut error = UpstreamError::new(
                            FailureClass::RateLimited,
                            "provider quota exhausted",
                        );
                        error.retry_after = Some(wait);
                        return Err(error);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
