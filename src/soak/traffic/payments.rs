//! The users' payments: each retried with its idempotency key until the gateway answers, and
//! its SCA approved in the "browser" once the bank asks for it; then followed to a final status.

use std::collections::HashSet;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Sent, Traffic, is_final};

/// The creditor every soak payment goes to (a valid Norwegian account number).
const CREDITOR: &str = "86011117947";

impl Traffic {
    /// Initiates payments until `stop`, each retried with its key until answered or `give_up`.
    pub async fn pay(&self, stop: Instant, give_up: Instant) {
        let mut rng = fastrand::Rng::new();
        while Instant::now() < stop {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..700))).await;
            let index = rng.usize(..self.users.len());
            let user = &self.users[index];
            let account = {
                let accounts = user.accounts.lock().expect("accounts");
                if accounts.is_empty() {
                    continue;
                }
                accounts[rng.usize(..accounts.len())].clone()
            };
            let body = json!({
                "bank": account.1,
                "debtor_account_id": account.0,
                "amount": format!("{}.00", rng.u32(100..2000)),
                "currency": "NOK",
                "creditor": {"name": "Kari Nordmann", "account_number": CREDITOR, "country": "NO"},
                "remittance_info": "Soak",
                "kind": "remittance",
            });
            let mut sent = Sent {
                key: Uuid::new_v4().to_string(),
                payment_id: None,
                answer: None,
                error: None,
                tries: 0,
                status: None,
                sca_done: HashSet::new(),
                user: index,
            };
            self.initiate(user, &body, &mut sent, give_up).await;
            self.tally.lock().expect("tally").payments.push(sent);
        }
    }

    /// Looks at every acknowledged payment once: records its status and approves the SCA the
    /// bank asks for. Returns how many are still moving (not final, nor unknown for good).
    pub async fn follow_payments(&self) -> usize {
        let open: Vec<(usize, String)> = self
            .tally
            .lock()
            .expect("tally")
            .payments
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.status.as_deref().is_some_and(is_final))
            .filter_map(|(i, p)| p.payment_id.clone().map(|id| (i, id)))
            .collect();
        let mut moving = 0;
        for (index, id) in open {
            let user = self.tally.lock().expect("tally").payments[index].user;
            let Ok(response) = self
                .http
                .get(format!("{}/v1/payments/{id}", self.client_url))
                .bearer_auth(&self.users[user].token)
                .send()
                .await
            else {
                moving += 1;
                continue;
            };
            let Ok(view) = response.json::<Value>().await else {
                moving += 1;
                continue;
            };
            let Some(status) = view["status"].as_str().map(str::to_owned) else {
                moving += 1;
                continue;
            };
            let redirect = view["sca_redirect"].as_str().map(str::to_owned);
            let approve = {
                let mut tally = self.tally.lock().expect("tally");
                let sent = &mut tally.payments[index];
                sent.status = Some(status.clone());
                match &redirect {
                    Some(url) if status == "pending_sca" => sent.sca_done.insert(url.clone()),
                    _ => false,
                }
            };
            if let (true, Some(url)) = (approve, redirect) {
                // The sandbox's SCA page approves at once and sends the browser back.
                if !matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_redirection())
                {
                    let mut tally = self.tally.lock().expect("tally");
                    tally.payments[index].sca_done.remove(&url);
                }
            }
            // Unknown at Neonomics stays so: Neonomics cannot be asked for a payment whose
            // answer was lost, and bankgate never sends it again (`Payments::resolve`).
            let untraceable = status == "unknown" && view["provider"] == "neonomics";
            if !is_final(&status) && !untraceable {
                moving += 1;
            }
        }
        moving
    }
}
