//! Payments in the books: created once per request, found by id or end-to-end reference,
//! and the ledger the control API shows.

use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};

use super::{NewPayment, Payment, ScaTarget, TransactionStatus, World};

impl World {
    /// Records a payment initiation. The debtor account must exist at the bank.
    pub fn create_payment(
        &mut self,
        new: NewPayment,
        now: DateTime<Utc>,
    ) -> Result<Payment, &'static str> {
        let debtor = self
            .account(&new.debtor_account)
            .ok_or("unknown debtor account")?;
        if debtor.bank != new.bank {
            return Err("debtor account is not held at this bank");
        }
        let debtor_iban = debtor.iban.clone();
        let sca_id = uuid::Uuid::new_v4().simple().to_string();
        let payment = Payment {
            payment_id: uuid::Uuid::new_v4().to_string(),
            provider: new.provider,
            bank: new.bank,
            product: new.product,
            request_id: new.request_id,
            end_to_end_id: new.end_to_end_id,
            amount: new.amount,
            currency: new.currency,
            debtor_iban,
            creditor_name: new.creditor_name,
            creditor_account: new.creditor_account,
            remittance_info: new.remittance_info,
            status: TransactionStatus::Received,
            reject_reason: None,
            sca_id: sca_id.clone(),
            redirect_url: new.redirect_url,
            initiated_at: now,
            updated_at: now,
        };
        self.sca
            .insert(sca_id, ScaTarget::Payment(self.payments.len()));
        self.payment_index
            .insert(payment.payment_id.clone(), self.payments.len());
        self.payments.push(payment.clone());
        Ok(payment)
    }

    /// Finds a payment initiated through `provider` at `bank`.
    pub fn payment(&self, provider: ProviderId, bank: BankId, id: &str) -> Option<&Payment> {
        let payment = &self.payments[*self.payment_index.get(id)?];
        (payment.provider == provider && payment.bank == bank).then_some(payment)
    }

    /// Finds the payments initiated through `provider` at `bank` with this end-to-end
    /// reference (how a TPP finds a payment whose initiation answer it lost).
    pub fn payments_by_reference(
        &self,
        provider: ProviderId,
        bank: BankId,
        product: &str,
        end_to_end_id: &str,
    ) -> Vec<&Payment> {
        self.payments
            .iter()
            .filter(|p| p.provider == provider && p.bank == bank && p.product == product)
            .filter(|p| p.end_to_end_id.as_deref() == Some(end_to_end_id))
            .collect()
    }

    /// Every payment initiated, oldest first.
    pub fn ledger(&self) -> &[Payment] {
        &self.payments
    }
}
