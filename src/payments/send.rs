//! Sending one payment and settling what its sending left open.
//!
//! A payment is sent only from `initiating`, committed before the call, through its bank
//! actor (which picks the provider); the answer decides the next status. A payment whose call
//! may have reached the provider is `unknown` until a look-up at the providers settles it, if
//! one can. One waiting for the user's SCA is polled, and is `authorised` when the user's
//! browser comes back or the provider says the SCA is done; it is then completed at the
//! provider, and done only when that call is answered.

use bankgate_actors::BankId;
use bankgate_actors::bank::{PayAnswer, PayRequest};
use bankgate_actors::provider::ProviderHandle;
use bankgate_actors::upstream::{Lookup, PaymentOrder, ProviderAccount, RemotePayment, StoreError};
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
    /// No provider found it, and one that may hold it cannot be asked (Neonomics, for a
    /// payment whose id never reached bankgate): it can never be proved nowhere.
    Untraceable,
    Inconclusive,
}

/// A payment at the provider that gave it an id (`Payments::held_at`).
struct Held<'a> {
    handle: &'a ProviderHandle,
    account: ProviderAccount,
    order: PaymentOrder,
    payment_id: String,
}

/// What the user's browser brought back from the bank's SCA page: Neonomics adds
/// `result=OK|FAILED` to the redirect (<https://docs.neonomics.io/reference/initiatedomesticpayment>,
/// `x-redirect-url`); a bank's own API adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaResult {
    Approved,
    Failed,
    NotSaid,
}

/// Where a payment stands after the user's browser came back from SCA, and the app's
/// address to send the browser on to, if it gave one.
#[derive(Debug)]
pub struct ScaReturn {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    pub redirect_url: Option<String>,
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
        if payment.status == PaymentStatus::Authorised {
            // Exempt from SCA: complete it now, as the provider requires.
            if let Some(done) = self.complete(id).await? {
                return Ok(done);
            }
        }
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
        match moved {
            Some(payment)
                if payment.status == PaymentStatus::PendingSca
                    && payment.sca_redirect.is_none() =>
            {
                Ok(self.authorize(id).await?.or(Some(payment)))
            }
            moved => Ok(moved),
        }
    }

    fn order(&self, sendable: &Sendable) -> PaymentOrder {
        let payment = &sendable.payment;
        PaymentOrder {
            bank: payment.bank,
            debtor_iban: sendable.debtor_iban.clone(),
            debtor_name: sendable.debtor_name.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            creditor_name: payment.creditor.name.clone(),
            creditor_account: payment.creditor.account().to_owned(),
            remittance_info: payment.remittance_info.clone(),
            reference: payment.reference.clone(),
            redirect_url: self.sca_return_url(payment),
            psu_ip: payment.psu_ip.clone(),
        }
    }

    /// Where the bank sends the user's browser after SCA: the payment's callback with its
    /// single-use state, which only the bank's redirect carries.
    fn sca_return_url(&self, payment: &PaymentRecord) -> String {
        let callback = format!(
            "{}/v1/payments/{}/callback",
            self.config.public_url.trim_end_matches('/'),
            payment.id
        );
        match &payment.callback_state {
            Some(state) => format!("{callback}?state={state}"),
            None => callback,
        }
    }

    /// Asks for the payment wherever it may be. One whose provider gave it an id is asked
    /// for by that id, there. Otherwise it is asked for by its reference at every provider
    /// the connection has an account with, through that account's consent whatever the
    /// consent's state, the provider it was last sent to first. It is "nowhere" only when
    /// every one of them says "not found": the provider recorded last is not always the one
    /// that got it (a gateway killed while sending records none), and a provider that never
    /// got it proves nothing by not finding it. Any other answer is inconclusive.
    async fn look_up(&self, sendable: &Sendable) -> Found {
        let payment = &sendable.payment;
        if payment.provider_payment_id.is_some() {
            let Some(held) = self.held_at(sendable) else {
                return Found::Inconclusive;
            };
            return match held
                .handle
                .find_payment(held.account, held.order, Some(held.payment_id))
                .await
            {
                Ok(Lookup::Found(remote)) => Found::Payment(remote),
                _ => Found::Inconclusive,
            };
        }
        let order = self.order(sendable);
        let last = payment.provider;
        let mut accounts = sendable.known.clone();
        accounts.sort_by_key(|a| Some(a.provider) != last);
        if accounts.is_empty() {
            return Found::Inconclusive;
        }
        let (mut conclusive, mut untraceable) = (true, false);
        for account in accounts {
            let account_provider = account.provider;
            let Some(handle) = self.providers.get(&account_provider) else {
                conclusive = false;
                continue;
            };
            match handle.find_payment(account, order.clone(), None).await {
                Ok(Lookup::Found(remote)) => return Found::Payment(remote),
                Ok(Lookup::Absent) => {}
                // A provider that cannot be asked holds it only if it was the one sent it
                // last, or none is recorded (a gateway killed while sending; a claim from the
                // queue forgets the previous attempt's provider): an outcome unknown there is
                // never sent on elsewhere (`resolve`), so a payment recorded at another
                // provider in this attempt was refused here, provably, before it went there.
                Ok(Lookup::Untraceable) if last.is_none_or(|p| p == account_provider) => {
                    untraceable = true
                }
                Ok(Lookup::Untraceable) => {}
                Err(_) => conclusive = false,
            }
        }
        // A provider that could be asked but did not answer may yet find it: that is worth
        // asking again, whatever another could not tell.
        match (conclusive, untraceable) {
            (false, _) => Found::Inconclusive,
            (true, true) => Found::Untraceable,
            (true, false) => Found::Nowhere,
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
            // The safe rule for a payment no provider can be asked for. Neonomics documents
            // no look-up but by the payment's id (https://docs.neonomics.io/reference/getpaymentbyid),
            // and an initiation whose answer was lost never gave bankgate that id. If the bank
            // asked for SCA (the 510/1428 answer, the usual case), the payment waits at
            // Neonomics for an authorisation nobody can give (the authorize link was in the
            // lost answer) and for the complete call bankgate cannot make: it never executes.
            // If the bank exempted it from SCA, "the initiation will already be complete in
            // step 1" (https://docs.neonomics.io/docs/payments-1) and it may be paid. The
            // documented calls cannot tell the two apart, so sending it again, through
            // Neonomics or the bank's own API, could pay twice: it is never sent again. It
            // stays `unknown`, counted in bankgate_payments{status="unknown"}, for the user to
            // check at the bank; it is never queued.
            Found::Untraceable | Found::Nowhere | Found::Inconclusive => return Ok(None),
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

    /// Asks the provider where a payment waiting for SCA stands. One whose SCA is done is
    /// `authorised`, and completed at once.
    pub(super) async fn poll(&self, id: Uuid) -> Result<(), StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(());
        };
        let Found::Payment(remote) = self.look_up(&sendable).await else {
            return Ok(());
        };
        let to = match remote_status(remote.status) {
            PaymentStatus::PendingSca if sendable.payment.sca_redirect.is_none() => {
                return self.authorize(id).await.map(drop);
            }
            PaymentStatus::PendingSca => return Ok(()),
            PaymentStatus::Completed => PaymentStatus::Authorised,
            to => to,
        };
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
            if to == PaymentStatus::Authorised {
                self.complete(id).await?;
            }
        }
        Ok(())
    }

    /// Asks the provider for the link the user follows to approve a payment waiting for SCA,
    /// where it gives it in a call of its own (Neonomics' authorize,
    /// <https://docs.neonomics.io/reference/continueauth>), and records it. Without an answer
    /// the payment waits without one, and the next poll asks again.
    async fn authorize(&self, id: Uuid) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let Some(held) = self.held_at(&sendable) else {
            return Ok(None);
        };
        match held
            .handle
            .authorize_payment(held.account, held.order, held.payment_id)
            .await
        {
            Ok(link) => self.store.set_sca_redirect(id, &link).await,
            Err(_) => Ok(None),
        }
    }

    /// Completes a payment the user authorised, at the provider that holds it, and records
    /// where the answer leaves it: Neonomics requires the complete call for every payment
    /// (<https://docs.neonomics.io/reference/completepayment>), and a payment is done only
    /// when it is answered. Without an answer it stays `authorised`, and the queue's upkeep
    /// completes it later; completing twice settles it once. Returns the payment as moved.
    pub(super) async fn complete(&self, id: Uuid) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let Some(held) = self.held_at(&sendable) else {
            return Ok(None);
        };
        let provider = held.account.provider;
        let Ok(remote) = held
            .handle
            .complete_payment(held.account, held.order, held.payment_id)
            .await
        else {
            return Ok(None);
        };
        let (to, reason) = match remote_status(remote.status) {
            PaymentStatus::Authorised => return Ok(None),
            PaymentStatus::PendingSca => (
                PaymentStatus::PendingSca,
                "the provider says the user's SCA is not done",
            ),
            to => (to, "completed at the provider"),
        };
        let change = Change {
            reason,
            provider: Some(provider),
            ..Change::default()
        };
        let moved = self
            .store
            .transition(id, &[PaymentStatus::Authorised], to, change)
            .await?;
        if moved.is_some() {
            count(sendable.payment.bank, to, 1);
        }
        Ok(moved)
    }

    /// Where a payment the provider gave an id is held: that provider, the connection's
    /// account there, the order and the id; `None` before a provider took it.
    fn held_at(&self, sendable: &Sendable) -> Option<Held<'_>> {
        let payment = &sendable.payment;
        let provider = payment.provider?;
        let payment_id = payment.provider_payment_id.clone()?;
        let account = sendable.known.iter().find(|a| a.provider == provider)?;
        Some(Held {
            handle: self.providers.get(&provider)?,
            account: account.clone(),
            order: self.order(sendable),
            payment_id,
        })
    }

    /// The user's browser is back from SCA with the payment's state: a payment that was
    /// waiting for it is `authorised` and completed at once, unless the provider said the
    /// SCA failed, when it is asked where the payment stands. Only the browser the bank sent
    /// back gets here, once: without the payment's state, with another, or with one used
    /// already, nothing moves and nothing about the payment is told (`BadState`, whether the
    /// payment exists or not). Returns where the payment stands and where the browser goes.
    pub async fn sca_returned(
        &self,
        id: Uuid,
        state: Option<&str>,
        result: ScaResult,
    ) -> Result<ScaReturn, PaymentError> {
        let payment = self.store.payment(id).await?;
        let expected = payment.as_ref().and_then(|p| p.callback_state.as_deref());
        let matches = match (expected, state) {
            (Some(expected), Some(given)) => aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                given.as_bytes(),
            )
            .is_ok(),
            _ => false,
        };
        let (Some(payment), Some(state)) = (payment, state.filter(|_| matches)) else {
            return Err(PaymentError::BadState);
        };
        if !self.store.use_callback_state(id, state).await? {
            return Err(PaymentError::BadState);
        }
        if payment.status == PaymentStatus::PendingSca {
            if result == ScaResult::Failed {
                self.poll(id).await?;
            } else {
                let change = Change {
                    reason: "the user's browser is back from SCA",
                    ..Change::default()
                };
                let moved = self
                    .store
                    .transition(
                        id,
                        &[PaymentStatus::PendingSca],
                        PaymentStatus::Authorised,
                        change,
                    )
                    .await?;
                if moved.is_some() {
                    count(payment.bank, PaymentStatus::Authorised, 1);
                    self.complete(id).await?;
                }
            }
        } else if payment.status == PaymentStatus::Authorised {
            self.complete(id).await?;
        }
        let payment = self
            .store
            .payment(id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        Ok(ScaReturn {
            payment_id: id,
            status: payment.status,
            redirect_url: payment.redirect_url,
        })
    }
}
