//! The SCA step a user's browser completes: it authorises a consent, or authorises a payment
//! and settles it against the debtor's balance once.

use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};

use super::{ConsentStatus, DEFAULT_PSU, Payment, ScaOutcome, ScaTarget, TransactionStatus, World};

impl World {
    /// Completes the SCA step `sca_id` as the PSU: approves it, or rejects it when `approve`
    /// is false. A consent opens the accounts of `psu` (or the PSU named at creation, or the
    /// default PSU); an approved payment settles at once unless the debtor lacks funds.
    /// Repeating a finished step changes nothing and redirects again.
    pub fn complete_sca(
        &mut self,
        sca_id: &str,
        approve: bool,
        psu: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<ScaOutcome> {
        match *self.sca.get(sca_id)? {
            ScaTarget::Consent(index) => {
                let consent = &mut self.consents[index];
                if consent.status == ConsentStatus::Received {
                    if approve {
                        consent.status = ConsentStatus::Valid;
                        let psu = psu
                            .or(consent.psu.take())
                            .unwrap_or_else(|| DEFAULT_PSU.to_owned());
                        consent.psu = Some(psu);
                    } else {
                        consent.status = ConsentStatus::Rejected;
                    }
                }
                let (bank, psu, redirect_url) = (
                    consent.bank,
                    consent.psu.clone(),
                    consent.redirect_url.clone(),
                );
                if let Some(psu) = psu {
                    self.accounts_of(bank, &psu);
                }
                Some(ScaOutcome {
                    redirect_url,
                    payment: None,
                })
            }
            ScaTarget::Payment(index) => {
                let payment = &mut self.payments[index];
                if payment.status != TransactionStatus::Received {
                    return Some(ScaOutcome {
                        redirect_url: payment.redirect_url.clone(),
                        payment: None,
                    });
                }
                if payment.provider == ProviderId::Neonomics {
                    // Neonomics' payment is settled by the TPP's complete call, not by the
                    // SCA itself (<https://docs.neonomics.io/reference/completepayment>).
                    payment.status = if approve {
                        TransactionStatus::Authorised
                    } else {
                        TransactionStatus::Rejected
                    };
                    payment.reject_reason = (!approve).then(|| "PSU rejected the payment".into());
                    payment.updated_at = now;
                    return Some(ScaOutcome {
                        redirect_url: payment.redirect_url.clone(),
                        payment: Some(payment.clone()),
                    });
                }
                let payment = self.settle(index, approve, now);
                Some(ScaOutcome {
                    redirect_url: payment.redirect_url.clone(),
                    payment: Some(payment),
                })
            }
        }
    }

    /// Settles an authorised payment against the debtor's balance, once: rejected without
    /// funds (or when the PSU said no), completed otherwise.
    fn settle(&mut self, index: usize, approve: bool, now: DateTime<Utc>) -> Payment {
        let payment = &self.payments[index];
        let debtor_iban = payment.debtor_iban.clone();
        let amount = payment.amount;
        let reject_reason = if !approve {
            Some("PSU rejected the payment")
        } else if self
            .accounts
            .get(&debtor_iban)
            .is_some_and(|a| a.balance < amount)
        {
            Some("insufficient funds")
        } else {
            None
        };
        if reject_reason.is_none()
            && let Some(account) = self.accounts.get_mut(&debtor_iban)
        {
            account.balance -= amount;
        }
        let payment = &mut self.payments[index];
        payment.status = match reject_reason {
            Some(_) => TransactionStatus::Rejected,
            None => TransactionStatus::Completed,
        };
        payment.reject_reason = reject_reason.map(str::to_owned);
        payment.updated_at = now;
        payment.clone()
    }

    /// Neonomics' complete call (<https://docs.neonomics.io/reference/completepayment>): an
    /// authorised payment settles, once; one already settled answers as it stands; one the
    /// PSU has not authorised yet is `Err` (it still needs its SCA).
    pub fn complete_payment(
        &mut self,
        provider: ProviderId,
        bank: BankId,
        id: &str,
        now: DateTime<Utc>,
    ) -> Option<Result<Payment, Payment>> {
        let index = *self.payment_index.get(id)?;
        let payment = &self.payments[index];
        if payment.provider != provider || payment.bank != bank {
            return None;
        }
        Some(match payment.status {
            TransactionStatus::Received => Err(payment.clone()),
            TransactionStatus::Authorised => Ok(self.settle(index, true, now)),
            TransactionStatus::Completed | TransactionStatus::Rejected => Ok(payment.clone()),
        })
    }
}
