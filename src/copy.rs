//! Every text a user of Drop's app sees, in Norwegian, in one place: balance warnings, the
//! banks' banners, payment messages and consent messages. The actors say which notice applies
//! (`bankgate_actors::bank::Warning`); this file says how it reads. The wording follows the
//! outage runbook's user messages.

use std::sync::LazyLock;

use bankgate_actors::BankId;
use bankgate_actors::bank::Warning;

/// When the user's consent at the bank no longer holds.
pub const CONSENT_EXPIRED: &str = "Banktilkobling utløpt – forny tilkoblingen";

/// When a payment is queued.
pub const PAYMENT_QUEUED: &str = "Betaling satt i kø. Vil bli behandlet innen 2 timer.";

/// While the outcome of sending a payment is being settled.
pub const PAYMENT_PROCESSING: &str = "Betalingen behandles. Status oppdateres snart.";

/// When a bank's payments are switched off.
pub const PAYMENTS_DISABLED: &str = "Betalinger midlertidig utilgjengelig";

/// A balance notice's text, formatted once per bank and kept: the cached read's answer
/// borrows it instead of formatting it again.
pub fn balance_warning(bank: BankId, warning: Warning) -> &'static str {
    static TEXTS: LazyLock<Vec<(BankId, Warning, String)>> = LazyLock::new(|| {
        BankId::ALL
            .into_iter()
            .flat_map(|bank| {
                Warning::ALL.map(|warning| (bank, warning, warning_text(bank, warning)))
            })
            .collect()
    });
    TEXTS
        .iter()
        .find(|(b, w, _)| *b == bank && *w == warning)
        .map(|(_, _, text)| text.as_str())
        .expect("a text for every bank and warning")
}

fn warning_text(bank: BankId, warning: Warning) -> String {
    let name = bank.display_name();
    match warning {
        Warning::Stale => format!("{name} opplever tekniske problemer. Saldo kan være utdatert."),
        Warning::Disabled => format!("Saldo fra {name} er midlertidig utilgjengelig."),
        Warning::Unavailable => {
            format!("{name} er utilgjengelig akkurat nå. Saldo kan ikke vises.")
        }
    }
}

/// The banner while a bank cannot be reached through any provider.
pub fn degraded_banner(bank: BankId) -> String {
    format!(
        "{} opplever tekniske problemer. Saldo vises med forsinkelse, og betalinger kan bli forsinket.",
        bank.display_name()
    )
}

/// The banner while an operator holds a bank's payments in the queue.
pub fn queued_banner(bank: BankId) -> String {
    format!(
        "Betalinger fra {} settes i kø og behandles innen 2 timer.",
        bank.display_name()
    )
}

/// When no provider could start a consent at the bank.
pub fn consent_unavailable(bank: BankId) -> String {
    format!(
        "{} kan ikke kobles til akkurat nå. Prøv igjen senere.",
        bank.display_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bank_has_each_warning_in_its_own_name() {
        for bank in BankId::ALL {
            for warning in Warning::ALL {
                let text = balance_warning(bank, warning);
                assert!(text.contains(bank.display_name()), "{text}");
            }
        }
        assert_eq!(
            balance_warning(BankId::Dnb, Warning::Stale),
            "DNB opplever tekniske problemer. Saldo kan være utdatert."
        );
    }
}
