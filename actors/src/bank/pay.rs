//! Payment initiation at one bank.
//!
//! A payment goes to the first provider whose breaker lets it through. It fails over to the
//! next only when the failure proves the provider did not carry it out (refused connection,
//! 503, 429, credentials); a timeout or a broken answer leaves the outcome unknown, and it is
//! never sent again before it has been looked up. When no path is left the answer is
//! `NotSent`, and the caller queues the payment.

use ractor::{ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::debug;

use super::{BankMsg, BankState};
use crate::ProviderId;
use crate::breaker::Permit;
use crate::upstream::{FailureClass, PaymentOrder, ProviderAccount, RemotePayment, UpstreamError};

/// One payment to initiate: the debtor's accounts at the providers and the order.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub accounts: Vec<ProviderAccount>,
    pub order: PaymentOrder,
}

/// How a payment initiation ended.
#[derive(Debug, Clone)]
pub enum PayAnswer {
    /// A provider accepted the payment; it waits for the user's SCA.
    Initiated(RemotePayment),
    /// No provider carried it out: every path is down, or each refused it before accepting
    /// it. Safe to queue and send later.
    NotSent { last_error: Option<FailureClass> },
    /// The provider may have received it (timeout, connection broken after sending): it must
    /// be looked up by reference before anything else is done with it.
    Unknown {
        provider: ProviderId,
        error: UpstreamError,
    },
    /// The provider refused the payment itself; sending it again would fail the same way.
    Refused {
        provider: ProviderId,
        error: UpstreamError,
    },
    /// The user's consent at the bank is no longer valid: `provider` said so, or (`None`) no
    /// provider holds a valid consent for the account any more, so no path can ever take it
    /// until the user renews the connection.
    ConsentExpired { provider: Option<ProviderId> },
}

pub(super) struct PendingPay {
    request: PayRequest,
    reply: RpcReplyPort<PayAnswer>,
    tried: Vec<ProviderId>,
    last_error: Option<FailureClass>,
}

impl BankState {
    /// Starts a payment's initiation at the first usable provider.
    pub(super) fn pay(
        &mut self,
        myself: &ActorRef<BankMsg>,
        request: PayRequest,
        reply: RpcReplyPort<PayAnswer>,
    ) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending_pays.insert(
            ticket,
            PendingPay {
                request,
                reply,
                tried: Vec::new(),
                last_error: None,
            },
        );
        self.dispatch_pay(myself, ticket);
    }

    /// Sends a payment to the next provider whose breaker lets it through, or answers
    /// `NotSent` when none is left.
    fn dispatch_pay(&mut self, myself: &ActorRef<BankMsg>, ticket: u64) {
        let now = Instant::now();
        let Some(pending) = self.pending_pays.get(&ticket) else {
            return;
        };
        let candidates: Vec<(ProviderId, ProviderAccount)> = self
            .args
            .config
            .providers
            .iter()
            .filter(|p| !pending.tried.contains(p))
            .filter_map(|&p| {
                let account = pending.request.accounts.iter().find(|a| a.provider == p)?;
                Some((p, account.clone()))
            })
            .collect();
        for (provider, account) in candidates {
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            let pending = self.pending_pays.get_mut(&ticket).expect("pending payment");
            pending.tried.push(provider);
            let order = pending.request.order.clone();
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                let result = handle.initiate_payment(account, order).await;
                let _ = myself.send_message(BankMsg::PayOutcome {
                    ticket,
                    provider,
                    probe,
                    result,
                });
            });
            return;
        }
        if let Some(pending) = self.pending_pays.remove(&ticket) {
            // Without a valid consent at any provider, no path will ever take it.
            let answer = if pending.request.accounts.is_empty() {
                PayAnswer::ConsentExpired { provider: None }
            } else {
                PayAnswer::NotSent {
                    last_error: pending.last_error,
                }
            };
            let _ = pending.reply.send(answer);
        }
    }

    pub(super) fn pay_outcome(
        &mut self,
        myself: &ActorRef<BankMsg>,
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<RemotePayment, UpstreamError>,
    ) {
        self.record(provider, probe, result.as_ref().err());
        let error = match result {
            Ok(payment) => {
                if let Some(pending) = self.pending_pays.remove(&ticket) {
                    let _ = pending.reply.send(PayAnswer::Initiated(payment));
                }
                return;
            }
            Err(error) => error,
        };
        let answer = match settle(provider, error) {
            Ok(answer) => answer,
            Err(error) => {
                // Failed before the provider accepted it: the next provider may take it.
                debug!(bank = %self.bank(), provider = %provider, error = %error, "payment not accepted; failing over");
                if let Some(pending) = self.pending_pays.get_mut(&ticket) {
                    pending.last_error = Some(error.class);
                }
                return self.dispatch_pay(myself, ticket);
            }
        };
        if let Some(pending) = self.pending_pays.remove(&ticket) {
            let _ = pending.reply.send(answer);
        }
    }
}

/// What a failed attempt at `provider` settles about the payment, or the error back when it
/// proves the provider did not carry it out, so that the next provider may take it.
fn settle(provider: ProviderId, error: UpstreamError) -> Result<PayAnswer, UpstreamError> {
    if !error.proves_not_carried_out() {
        // A timeout, a broken answer, or a refusal broken off mid-way (it may not be the
        // provider's): the provider may hold it.
        return Ok(PayAnswer::Unknown { provider, error });
    }
    match error.class {
        FailureClass::Consent => Ok(PayAnswer::ConsentExpired {
            provider: Some(provider),
        }),
        FailureClass::Client => Ok(PayAnswer::Refused { provider, error }),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(class: FailureClass, status: u16) -> UpstreamError {
        let mut error = UpstreamError::new(class, "provider answered");
        error.status = Some(status);
        error
    }

    #[test]
    fn only_a_refusal_read_in_full_settles_a_payment_as_not_carried_out() {
        let neonomics = ProviderId::Neonomics;
        let settled = |error| settle(neonomics, error);
        // Neonomics' client error (510) refuses it; its own and the bank's failures do not.
        assert!(matches!(
            settled(answered(FailureClass::Client, 510)),
            Ok(PayAnswer::Refused { .. })
        ));
        for status in [520, 530, 500] {
            assert!(matches!(
                settled(answered(FailureClass::Server, status)),
                Ok(PayAnswer::Unknown { .. })
            ));
        }
        assert!(settled(answered(FailureClass::Server, 503)).is_err());
        assert!(settled(answered(FailureClass::RateLimited, 429)).is_err());
        // A 400 whose body broke off mid-way may be a proxy's: the provider may hold it.
        assert!(matches!(
            settled(answered(FailureClass::Client, 400).maybe_delivered()),
            Ok(PayAnswer::Unknown { .. })
        ));
        assert!(matches!(
            settled(answered(FailureClass::Consent, 401).maybe_delivered()),
            Ok(PayAnswer::Unknown { .. })
        ));
        assert!(matches!(
            settled(answered(FailureClass::Consent, 401)),
            Ok(PayAnswer::ConsentExpired { .. })
        ));
        // A provider with no product for the payment never sent it: the next may take it.
        let unsupported = UpstreamError::new(FailureClass::Unsupported, "no such product");
        assert!(settled(unsupported).is_err());
    }
}
