//! The user's payments as the client API shows them: one by id, or the latest, each with its
//! status history. Another user's payment is not found.

use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::request::Creditor;
use super::store::{PaymentEvent, PaymentRecord};
use super::{PaymentStatus, Payments};
use bankgate_sandbox::http::ApiError;

/// A payment as `GET /v1/payments` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    pub bank: BankId,
    pub debtor_account_id: Uuid,
    pub amount: String,
    pub currency: String,
    pub creditor: Creditor,
    pub remittance_info: Option<String>,
    pub kind: String,
    pub provider: Option<ProviderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sca_redirect: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<PaymentEvent>,
}

impl Payments {
    /// `GET /v1/payments/{id}`: the user's own payment only.
    pub async fn view(&self, user: &str, id: Uuid) -> Result<PaymentView, ApiError> {
        let payment = self
            .store
            .payment(id)
            .await?
            .filter(|p| p.user_id == user)
            .ok_or_else(|| ApiError::not_found("no such payment"))?;
        let mut events = self.store.events(&[id]).await?;
        Ok(Self::render(
            payment,
            events.remove(&id).unwrap_or_default(),
        ))
    }

    /// `GET /v1/payments?status=`: the user's latest payments.
    pub async fn list(
        &self,
        user: &str,
        status: Option<PaymentStatus>,
    ) -> Result<Vec<PaymentView>, ApiError> {
        let payments = self.store.list(user, status, 100).await?;
        let ids: Vec<Uuid> = payments.iter().map(|p| p.id).collect();
        let mut events = self.store.events(&ids).await?;
        Ok(payments
            .into_iter()
            .map(|p| {
                let history = events.remove(&p.id).unwrap_or_default();
                Self::render(p, history)
            })
            .collect())
    }

    fn render(payment: PaymentRecord, history: Vec<PaymentEvent>) -> PaymentView {
        PaymentView {
            payment_id: payment.id,
            status: payment.status,
            bank: payment.bank,
            debtor_account_id: payment.debtor_connection,
            amount: payment.amount.to_string(),
            currency: payment.currency,
            creditor: payment.creditor,
            remittance_info: payment.remittance_info,
            kind: payment.kind,
            provider: payment.provider,
            sca_redirect: payment
                .sca_redirect
                .filter(|_| payment.status == PaymentStatus::PendingSca),
            created_at: payment.created_at,
            updated_at: payment.updated_at,
            history,
        }
    }
}
