//! The users' balance reads: each from its own sessions, renewing a connection whose consent
//! expired, and sorted by what the gateway answered (live, cached, stale, unavailable).

use std::time::Duration;

use bankgate_actors::BankId;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use super::{Reads, Traffic};

/// An account counts as having a cached balance this long after its first one was served:
/// the gateway persists last-known balances behind the answer, in batches at most
/// `balances.persist_every` (500 ms) apart, and a SIGKILL before its batch is written may lose
/// the very first one.
const PERSISTED_AFTER: Duration = Duration::from_secs(2);

impl Traffic {
    /// One user's reads until `stop`: the whole list or one account, a few times a second.
    pub async fn read_balances(&self, user: usize, stop: Instant) {
        let mut rng = fastrand::Rng::new();
        let user = &self.users[user];
        while Instant::now() < stop {
            tokio::time::sleep(Duration::from_millis(rng.u64(150..350))).await;
            let accounts = user.accounts.lock().expect("accounts").clone();
            if accounts.is_empty() {
                continue;
            }
            let one = rng
                .bool()
                .then(|| accounts[rng.usize(..accounts.len())].clone());
            let path = match &one {
                Some((id, _)) => format!("/v1/accounts/{id}/balances"),
                None => "/v1/balances".to_owned(),
            };
            let asked = match &one {
                Some(account) => vec![account.clone()],
                None => accounts,
            };
            let cached_before = self.had_cache(&asked);
            let response = self
                .http
                .get(format!("{}{path}", self.client_url))
                .bearer_auth(&user.token)
                .header("x-psu-ip-address", "192.0.2.10")
                .send()
                .await;
            let during_outage = self.database_is_away();
            let (status, body) = match response {
                Ok(response) => {
                    let status = response.status();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                }
                Err(_) => {
                    let mut tally = self.tally.lock().expect("tally");
                    tally.reads.total += 1;
                    tally.reads.unreachable += 1;
                    continue;
                }
            };
            let views: Vec<Value> = match &one {
                Some(_) => vec![body.clone()],
                None => body["accounts"].as_array().cloned().unwrap_or_default(),
            };
            let mut renew = Vec::new();
            {
                let mut tally = self.tally.lock().expect("tally");
                let reads = &mut tally.reads;
                reads.total += 1;
                reads.during_database_outage += u64::from(during_outage);
                if status.is_success() {
                    if views.iter().any(|v| v["stale"] == true) {
                        reads.stale += 1;
                    }
                    if views.iter().all(|v| v["source"] == "live") {
                        reads.live += 1;
                    } else {
                        reads.cache += 1;
                    }
                } else if status == StatusCode::FORBIDDEN {
                    reads.consent_expired += 1;
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    reads.rate_limited += 1;
                } else if status.is_client_error() {
                    reads.other_4xx += 1;
                    sample(reads, format!("{status} on {path}: {}", body["error"]));
                } else {
                    reads.server_errors += 1;
                    if cached_before {
                        reads.server_errors_with_cache += 1;
                        let at = self.started.elapsed().as_secs_f64();
                        sample(
                            reads,
                            format!(
                                "{status} at {at:.1} s on {path} with a cached balance: {body}"
                            ),
                        );
                    }
                }
            }
            if status.is_success() {
                let mut served = self.served.lock().expect("served");
                let mut expired = self.expired.lock().expect("expired");
                for view in &views {
                    let Some(id) = view["account_id"].as_str() else {
                        continue;
                    };
                    if !view["amount"].is_null() {
                        served.entry(id.to_owned()).or_insert_with(Instant::now);
                    }
                    if view["error"] == "consent_expired" {
                        expired.insert(id.to_owned());
                        renew.extend(bank_of(&asked, id));
                    }
                }
            } else if status == StatusCode::FORBIDDEN {
                let mut expired = self.expired.lock().expect("expired");
                for (id, bank) in &asked {
                    expired.insert(id.clone());
                    renew.push(*bank);
                }
            }
            for bank in renew {
                self.renew(user, bank).await;
            }
        }
    }

    /// Whether any of `accounts` had a balance shown long enough ago to be persisted, and has
    /// not had its consent expire since.
    fn had_cache(&self, accounts: &[(String, BankId)]) -> bool {
        let served = self.served.lock().expect("served");
        let expired = self.expired.lock().expect("expired");
        accounts.iter().any(|(id, _)| {
            !expired.contains(id)
                && served
                    .get(id)
                    .is_some_and(|at| at.elapsed() > PERSISTED_AFTER)
        })
    }
}

fn bank_of(accounts: &[(String, BankId)], id: &str) -> Option<BankId> {
    accounts.iter().find(|(a, _)| a == id).map(|(_, b)| *b)
}

fn sample(reads: &mut Reads, line: String) {
    if reads.samples.len() < 10 {
        reads.samples.push(line);
    }
}
