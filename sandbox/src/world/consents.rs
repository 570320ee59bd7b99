//! Consents in the books: created, read, authorising reads (counting unattended ones per
//! day), expired and terminated.

use bankgate_actors::ProviderId;
use chrono::{DateTime, Utc};

use super::{Account, Consent, ConsentProblem, ConsentStatus, NewConsent, ScaTarget, World};

impl World {
    /// Finds an account by its id at `provider`, among those `consent` opens.
    pub fn consented_account(
        &mut self,
        consent_id: &str,
        provider: ProviderId,
        account_id: &str,
    ) -> Option<Account> {
        let consent = self.consent(consent_id)?.clone();
        let psu = consent.psu.as_deref()?;
        self.accounts_of(consent.bank, psu)
            .into_iter()
            .find(|a| a.id_at(provider) == account_id)
    }

    pub fn create_consent(&mut self, new: NewConsent, now: DateTime<Utc>) -> Consent {
        let NewConsent {
            provider,
            bank,
            psu,
            requested_until,
            frequency_per_day,
            redirect_url,
        } = new;
        let ttl =
            chrono::Duration::from_std(self.consent_ttl).unwrap_or(chrono::Duration::days(90));
        let mut valid_until = now + ttl;
        if let Some(date) = requested_until {
            let end_of_day = date.and_hms_opt(23, 59, 59).expect("valid time").and_utc();
            valid_until = valid_until.min(end_of_day);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let sca_id = uuid::Uuid::new_v4().simple().to_string();
        let consent = Consent {
            id: id.clone(),
            provider,
            bank,
            status: ConsentStatus::Received,
            psu,
            valid_until,
            frequency_per_day,
            redirect_url,
            sca_id: sca_id.clone(),
            created_at: now,
            unattended_reads: (None, 0),
        };
        self.sca
            .insert(sca_id, ScaTarget::Consent(self.consents.len()));
        self.consent_index.insert(id, self.consents.len());
        self.consents.push(consent.clone());
        consent
    }

    pub fn consent(&self, id: &str) -> Option<&Consent> {
        self.consent_index.get(id).map(|&i| &self.consents[i])
    }

    /// Returns the consent's status, turning a valid consent past its date into `expired`.
    pub fn consent_status(&mut self, id: &str, now: DateTime<Utc>) -> Option<ConsentStatus> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        if consent.status == ConsentStatus::Valid && consent.valid_until <= now {
            consent.status = ConsentStatus::Expired;
        }
        Some(consent.status)
    }

    /// Checks that `id` allows an account read now; `attended` reads (the PSU is present)
    /// do not count against the consent's reads per day.
    pub fn authorize_read(
        &mut self,
        id: &str,
        attended: bool,
        now: DateTime<Utc>,
    ) -> Result<Consent, ConsentProblem> {
        let status = self
            .consent_status(id, now)
            .ok_or(ConsentProblem::Unknown)?;
        let index = self.consent_index[id];
        let consent = &mut self.consents[index];
        match status {
            ConsentStatus::Valid => {}
            ConsentStatus::Expired => return Err(ConsentProblem::Expired),
            _ => return Err(ConsentProblem::NotValid),
        }
        if !attended {
            let today = now.date_naive();
            if consent.unattended_reads.0 != Some(today) {
                consent.unattended_reads = (Some(today), 0);
            }
            if consent.unattended_reads.1 >= consent.frequency_per_day {
                return Err(ConsentProblem::AccessExceeded);
            }
            consent.unattended_reads.1 += 1;
        }
        Ok(consent.clone())
    }

    /// Expires a consent at once, as if its validity had run out.
    pub fn expire_consent(&mut self, id: &str) -> Option<Consent> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        consent.status = ConsentStatus::Expired;
        Some(consent.clone())
    }

    /// Ends a consent at the TPP's request (DELETE).
    pub fn terminate_consent(&mut self, id: &str) -> Option<Consent> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        consent.status = ConsentStatus::TerminatedByTpp;
        Some(consent.clone())
    }

    pub fn consents(&self) -> &[Consent] {
        &self.consents
    }
}
