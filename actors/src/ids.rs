//! The closed vocabularies every layer shares: which banks, which providers, which service.
//!
//! They are enums rather than strings so that metric labels stay bounded and a typo in a
//! setting, a URL or a fault fails to parse instead of creating a new bank.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A bank that Drop's users connect through bankgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BankId {
    Dnb,
    Nordea,
    Sparebank1,
}

impl BankId {
    pub const ALL: [BankId; 3] = [BankId::Dnb, BankId::Nordea, BankId::Sparebank1];

    /// Returns the id used in URLs, settings and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BankId::Dnb => "dnb",
            BankId::Nordea => "nordea",
            BankId::Sparebank1 => "sparebank1",
        }
    }

    /// Returns the bank's name as users know it, for Norwegian banners and warnings.
    pub fn display_name(self) -> &'static str {
        match self {
            BankId::Dnb => "DNB",
            BankId::Nordea => "Nordea",
            BankId::Sparebank1 => "SpareBank 1",
        }
    }

    /// Returns the bank's BIC, which Neonomics uses as the bank's id.
    pub fn bic(self) -> &'static str {
        match self {
            BankId::Dnb => "DNBANOKKXXX",
            BankId::Nordea => "NDEANOKKXXX",
            BankId::Sparebank1 => "SPRONO22XXX",
        }
    }
}

/// An upstream path to the banks: the aggregator or the banks' own PSD2 APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    /// Neonomics, the Open Banking aggregator (primary).
    Neonomics,
    /// The banks' own Berlin Group NextGenPSD2 APIs (backup).
    Psd2,
}

impl ProviderId {
    pub const ALL: [ProviderId; 2] = [ProviderId::Neonomics, ProviderId::Psd2];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Neonomics => "neonomics",
            ProviderId::Psd2 => "psd2",
        }
    }
}

/// Who pushes a payment's status changes, with a secret of its own: a bank's own PSD2 API,
/// for itself. Neonomics is none: it documents no push for its payment API, only for its
/// merchant checkout (<https://docs.neonomics.io/docs/webhook-payment-status-updates>), so the
/// status of a payment sent through it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookSource {
    pub provider: ProviderId,
    /// The bank whose own API pushes.
    pub bank: Option<BankId>,
}

impl WebhookSource {
    /// Where the status of a payment sent through `provider` to `bank` is pushed from, if
    /// anywhere.
    pub fn of(provider: ProviderId, bank: BankId) -> Option<WebhookSource> {
        (provider == ProviderId::Psd2).then_some(WebhookSource {
            provider,
            bank: Some(bank),
        })
    }

    /// Every source, each once.
    pub fn all() -> Vec<WebhookSource> {
        BankId::ALL
            .into_iter()
            .filter_map(|bank| WebhookSource::of(ProviderId::Psd2, bank))
            .collect()
    }

    /// Whether a payment sent through `provider` to `bank` is this source's to settle.
    pub fn covers(self, provider: ProviderId, bank: BankId) -> bool {
        WebhookSource::of(provider, bank) == Some(self)
    }
}

/// `psd2/dnb`: the source's part of its webhook URL and its settings key.
impl fmt::Display for WebhookSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bank {
            Some(bank) => write!(f, "{}/{bank}", self.provider),
            None => write!(f, "{}", self.provider),
        }
    }
}

impl FromStr for WebhookSource {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookSource::all()
            .into_iter()
            .find(|source| source.to_string() == s)
            .ok_or_else(|| ParseIdError {
                kind: "webhook source",
                value: s.to_owned(),
                expected: "psd2/dnb, psd2/nordea, psd2/sparebank1",
            })
    }
}

/// The PSD2 service a call belongs to: account information or payment initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Aisp,
    Pisp,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Aisp, Service::Pisp];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Aisp => "aisp",
            Service::Pisp => "pisp",
        }
    }
}

/// Returned when a string names no known bank, provider or service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct ParseIdError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! id_strings {
    ($ty:ty, $kind:literal, $expected:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| ParseIdError {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: $expected,
                    })
            }
        }
    };
}

id_strings!(BankId, "bank", "dnb, nordea, sparebank1");
id_strings!(ProviderId, "provider", "neonomics, psd2");
id_strings!(Service, "service", "aisp, pisp");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        for bank in BankId::ALL {
            assert_eq!(bank.as_str().parse::<BankId>().unwrap(), bank);
            assert_eq!(serde_json::to_string(&bank).unwrap(), format!("\"{bank}\""));
        }
        for provider in ProviderId::ALL {
            assert_eq!(provider.as_str().parse::<ProviderId>().unwrap(), provider);
        }
        assert_eq!("pisp".parse::<Service>().unwrap(), Service::Pisp);
    }

    #[test]
    fn each_bank_pushes_for_itself_and_neonomics_not_at_all() {
        let all = WebhookSource::all();
        assert_eq!(all.len(), 3);
        for source in &all {
            assert_eq!(
                source.to_string().parse::<WebhookSource>().unwrap(),
                *source
            );
        }
        assert_eq!(WebhookSource::of(ProviderId::Neonomics, BankId::Dnb), None);
        assert!("neonomics".parse::<WebhookSource>().is_err());
        let dnb = "psd2/dnb".parse::<WebhookSource>().unwrap();
        assert!(dnb.covers(ProviderId::Psd2, BankId::Dnb));
        assert!(!dnb.covers(ProviderId::Psd2, BankId::Nordea));
        assert!(!dnb.covers(ProviderId::Neonomics, BankId::Dnb));
    }

    #[test]
    fn unknown_ids_name_the_choices() {
        let err = "handelsbanken".parse::<BankId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown bank `handelsbanken` (expected one of: dnb, nordea, sparebank1)"
        );
    }
}
