//! Sending one payment and settling what its sending left open.
//!
//! A payment is sent only from `initiating`, committed before the call, through its bank
//! actor (which picks the provider); the answer decides the next status. A payment whose call
//! may have reached the provider is `unknown` until a look-up by its reference at the
//! providers settles it, and one waiting for the user's SCA is polled, or asked at once when
//! the user's browser comes back.

use bankgate_actors::BankId;
use bankgate_actors::bank::{PayAnswer, PayRequest};
use bankgate_actors::upstream::{PaymentOrder, RemotePayment, StoreError};
use serde_json::json;
use uuid::Uuid;

use super::error::PaymentError;
use super::service::{count, remote_status};
use super::store::{Change, PaymentRecord, Sendable};
use super::{FailureReason, PaymentStatus, Payments};

/// What a look-up at the providers proved.
enum Found {
    Payment(RemotePayment),
    /// Every provider that could hold it answered that it does not.
    Nowhere,
    Inconclusive,
}

impl Payments {
    /// Sends a payment just written as `received`; returns it as this request left it (the
    /// drainer may take a payment queued here at once: the client is told it was queued).
    pub(super) async fn send_new(
        &self,
        id: Uuid,
        bank: BankId,
    ) -> Result<PaymentRecord, StoreError> {
        let moved = self
            .store
            .transition(
                id,
                &[PaymentStatus::Received],
                PaymentStatus::Initiating,
                Change {
                    reason: "sending to the bank",
                    ..Change::default()
                },
            )
            .await?;
        let sent = match moved {
            Some(_) => {
                count(bank, PaymentStatus::Initiating, 1);
                self.send(id).await?
            }
            None => None,
        };
        let payment = match sent {
            Some(payment) => payment,
            None => self
                .store
                .payment(id)
                .await?
                .expect("payments are never deleted"),
        };
        if payment.status == PaymentStatus::Unknown {
            // The provider may hold it: a look-up often settles it at once. Only finding it
            // counts here; "not found" is believed only after `in_flight_timeout`.
            if let Some(found) = self.resolve(id, false).await? {
                return Ok(found);
            }
        }
        Ok(payment)
    }

    /// Sends a payment in `initiating` and records the outcome; returns the payment as
    /// recorded, or `None` when it was no longer this call's to send.
    pub(super) async fn send(&self, id: Uuid) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let payment = &sendable.payment;
        let request = PayRequest {
            accounts: sendable.accounts.clone(),
            order: self.order(&sendable),
        };
        let deadline = self.config.in_flight_timeout / 2;
        let answer = self.bank(payment.bank).pay(request, deadline).await;
        let bank = payment.bank;
        let from = [PaymentStatus::Initiating];
        let (to, change) = match &answer {
            Ok(PayAnswer::Initiated(remote)) => (
                remote_status(remote.status),
                Change {
                    reason: "accepted by the provider",
                    provider: Some(remote.provider),
                    provider_payment_id: Some(&remote.payment_id),
                    sca_redirect: remote.sca_redirect.as_deref(),
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::NotSent { .. }) => (
                PaymentStatus::Queued,
                Change {
                    reason: "no provider path to the bank could take it; queued",
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::Unknown { provider, error }) => (
                PaymentStatus::Unknown,
                Change {
                    reason: "the provider may have received it; to be looked up",
                    provider: Some(*provider),
                    error: Some(&error.detail),
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::Refused { provider, error }) => (
                PaymentStatus::Failed,
                Change {
                    reason: "refused by the bank",
                    provider: Some(*provider),
                    error: Some(&error.detail),
                    failure: Some(FailureReason::Refused),
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::ConsentExpired { provider }) => (
                PaymentStatus::Failed,
                Change {
                    reason: "the user's consent at the bank expired",
                    provider: *provider,
                    error: Some("consent expired"),
                    failure: Some(FailureReason::ConsentExpired),
                    ..Change::default()
                },
            ),
            Err(_) => (
                PaymentStatus::Unknown,
                Change {
                    reason: "the bank connection restarted mid-call; to be looked up",
                    ..Change::default()
                },
            ),
        };
        let moved = self.store.transition(id, &from, to, change).await?;
        if moved.is_some() {
            count(bank, to, 1);
        }
        Ok(moved)
    }

    fn order(&self, sendable: &Sendable) -> PaymentOrder {
        let payment = &sendable.payment;
        PaymentOrder {
            bank: payment.bank,
            debtor_iban: sendable.debtor_iban.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            creditor_name: payment.creditor.name.clone(),
            creditor_account: payment.creditor.account().to_owned(),
            remittance_info: payment.remittance_info.clone(),
            reference: payment.reference.clone(),
            redirect_url: format!(
                "{}/v1/payments/{}/callback",
                self.config.public_url.trim_end_matches('/'),
                payment.id
            ),
            psu_ip: payment.psu_ip.clone(),
        }
    }

    /// Asks for the payment by its reference wherever it may be: at every provider the
    /// connection has an account with, through that account's consent whatever the consent's
    /// state, the provider it was last sent to first. It is "nowhere" only when every one of
    /// them says "not found": the provider recorded last is not always the one that got it
    /// (a gateway killed while sending records none), and a provider that never got it
    /// proves nothing by not finding it. Any other answer is inconclusive.
    async fn look_up(&self, sendable: &Sendable) -> Found {
        let order = self.order(sendable);
        let last = sendable.payment.provider;
        let mut accounts = sendable.known.clone();
        accounts.sort_by_key(|a| Some(a.provider) != last);
        if accounts.is_empty() {
            return Found::Inconclusive;
        }
        let mut conclusive = true;
        for account in accounts {
            let Some(handle) = self.providers.get(&account.provider) else {
                conclusive = false;
                continue;
            };
            match handle.find_payment(account, order.clone()).await {
                Ok(Some(remote)) => return Found::Payment(remote),
                Ok(None) => {}
                Err(_) => conclusive = false,
            }
        }
        if conclusive {
            Found::Nowhere
        } else {
            Found::Inconclusive
        }
    }

    /// Settles a payment in `unknown` by looking it up. With `requeue`, a payment no
    /// provider has goes back to the queue to be sent again. Returns the payment as moved,
    /// or `None` when it stays where it was.
    pub(super) async fn resolve(
        &self,
        id: Uuid,
        requeue: bool,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let bank = sendable.payment.bank;
        let found = self.look_up(&sendable).await;
        let (to, change) = match &found {
            Found::Payment(remote) => (
                remote_status(remote.status),
                Change {
                    reason: "found at the provider by its reference",
                    provider: Some(remote.provider),
                    provider_payment_id: Some(&remote.payment_id),
                    sca_redirect: remote.sca_redirect.as_deref(),
                    ..Change::default()
                },
            ),
            Found::Nowhere if requeue => (
                PaymentStatus::Queued,
                Change {
                    reason: "no provider received it; queued to be sent again",
                    ..Change::default()
                },
            ),
            Found::Nowhere | Found::Inconclusive => return Ok(None),
        };
        let moved = self
            .store
            .transition(id, &[PaymentStatus::Unknown], to, change)
            .await?;
        if moved.is_some() {
            count(bank, to, 1);
        }
        Ok(moved)
    }

    /// Asks the provider where a payment waiting for SCA stands.
    pub(super) async fn poll(&self, id: Uuid) -> Result<(), StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(());
        };
        let Found::Payment(remote) = self.look_up(&sendable).await else {
            return Ok(());
        };
        let to = remote_status(remote.status);
        if to == PaymentStatus::PendingSca {
            return Ok(());
        }
        let change = Change {
            reason: "status polled at the provider",
            provider: Some(remote.provider),
            ..Change::default()
        };
        if self
            .store
            .transition(id, &[PaymentStatus::PendingSca], to, change)
            .await?
            .is_some()
        {
            count(sendable.payment.bank, to, 1);
        }
        Ok(())
    }

    /// The user's browser is back from SCA: ask the provider at once.
    pub async fn sca_returned(&self, id: Uuid) -> Result<serde_json::Value, PaymentError> {
        let payment = self
            .store
            .payment(id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        if payment.status == PaymentStatus::PendingSca {
            self.poll(id).await?;
        }
        let payment = self
            .store
            .payment(id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        Ok(json!({"payment_id": id, "status": payment.status}))
    }
}
