//! The soak's steady traffic, played as Drop's app and its users would: balance reads from
//! many sessions (renewing a connection when its consent expired), payments retried with the
//! same idempotency key until the gateway answers, and each payment's SCA approved in the
//! "browser" once the bank asks for it. Everything seen is tallied for the report.

mod payments;
mod reads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

/// A user connects a bank again at most this often.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Where users come back to after a consent.
const APP_RETURN: &str = "https://drop.example/connected";

/// A user of the soak, connected to every bank.
pub struct User {
    pub token: String,
    national_id: NationalId,
    accounts: Mutex<Vec<(String, BankId)>>,
    renewed: Mutex<HashMap<BankId, Instant>>,
}

/// Client side of the run: the gateway's address and what was seen.
pub struct Traffic {
    pub client_url: String,
    pub http: reqwest::Client,
    pub users: Vec<Arc<User>>,
    tally: Mutex<Tally>,
    /// First time each account's balance was shown with an amount.
    served: Mutex<HashMap<String, Instant>>,
    /// Accounts answered `consent_expired` since their last renewal.
    expired: Mutex<HashSet<String>>,
    started: Instant,
    /// When PostgreSQL was away, as offsets into the run.
    database_away: Mutex<Option<(Duration, Option<Duration>)>>,
}

/// Balance reads by what the client saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Reads {
    pub total: u64,
    pub live: u64,
    pub cache: u64,
    /// Answers with at least one stale balance.
    pub stale: u64,
    pub consent_expired: u64,
    pub rate_limited: u64,
    pub other_4xx: u64,
    pub server_errors: u64,
    /// 5xx answers for an account that had a balance to show: the soak's first invariant.
    pub server_errors_with_cache: u64,
    /// No connection or no answer: the gateway was being restarted.
    pub unreachable: u64,
    pub during_database_outage: u64,
    pub renewals: u64,
    pub samples: Vec<String>,
}

/// One payment as the client knows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Sent {
    pub key: String,
    pub payment_id: Option<String>,
    /// The gateway's final answer to the initiation (2xx with an id, or a 4xx).
    pub answer: Option<u16>,
    pub error: Option<String>,
    pub tries: u32,
    pub status: Option<String>,
    #[serde(skip)]
    sca_done: HashSet<String>,
    #[serde(skip)]
    user: usize,
}

#[derive(Debug, Default)]
struct Tally {
    reads: Reads,
    payments: Vec<Sent>,
    /// Initiation answers by status and error code, retries included.
    answers: BTreeMap<String, u64>,
    answers_during_database_outage: BTreeMap<String, u64>,
}

impl Traffic {
    /// Connects `users` users to every bank through the gateway and the sandbox's SCA pages.
    pub async fn connect(
        client_url: String,
        token_secret: &secrecy::SecretString,
        users: u32,
        ttl: Duration,
    ) -> anyhow::Result<Traffic> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()?;
        let run = &Uuid::new_v4().simple().to_string()[..8];
        let mut list = Vec::new();
        for index in 0..users {
            let name = format!("soak-{run}-{index}");
            let session = Uuid::new_v4().to_string();
            let token = crate::token::mint(token_secret, &name, &session, ttl)?;
            let national_id = NationalId::synthetic(&name);
            for bank in BankId::ALL {
                crate::browser::connect(&client_url, &token, &national_id, bank, APP_RETURN)
                    .await?;
            }
            let user = User {
                token,
                national_id,
                accounts: Mutex::new(Vec::new()),
                renewed: Mutex::new(HashMap::new()),
            };
            load_accounts(&http, &client_url, &user).await?;
            list.push(Arc::new(user));
        }
        let traffic = Traffic {
            client_url,
            http,
            users: list,
            tally: Mutex::new(Tally::default()),
            served: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashSet::new()),
            started: Instant::now(),
            database_away: Mutex::new(None),
        };
        traffic.first_reads().await?;
        Ok(traffic)
    }

    /// Each user looks at their balances once before the faults begin, as after connecting.
    async fn first_reads(&self) -> anyhow::Result<()> {
        for user in &self.users {
            let body: Value = self
                .http
                .get(format!("{}/v1/balances", self.client_url))
                .bearer_auth(&user.token)
                .header("x-psu-ip-address", "192.0.2.10")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let mut served = self.served.lock().expect("served");
            for view in body["accounts"].as_array().into_iter().flatten() {
                if let Some(id) = view["account_id"].as_str()
                    && !view["amount"].is_null()
                {
                    served.insert(id.to_owned(), Instant::now());
                }
            }
        }
        Ok(())
    }

    pub fn database_stopped(&self) {
        *self.database_away.lock().expect("outage") = Some((self.started.elapsed(), None));
    }

    pub fn database_started(&self) {
        if let Some((_, up)) = self.database_away.lock().expect("outage").as_mut() {
            *up = Some(self.started.elapsed());
        }
    }

    fn database_is_away(&self) -> bool {
        let now = self.started.elapsed();
        self.database_away
            .lock()
            .expect("outage")
            .is_some_and(|(down, up)| now >= down && up.is_none_or(|up| now <= up))
    }

    /// Connects the user to `bank` again, as the app asks after `consent_expired`.
    async fn renew(&self, user: &User, bank: BankId) {
        {
            let mut renewed = user.renewed.lock().expect("renewed");
            if renewed
                .get(&bank)
                .is_some_and(|at| at.elapsed() < RENEW_EVERY)
            {
                return;
            }
            renewed.insert(bank, Instant::now());
        }
        if crate::browser::connect(
            &self.client_url,
            &user.token,
            &user.national_id,
            bank,
            APP_RETURN,
        )
        .await
        .is_err()
        {
            return;
        }
        self.tally.lock().expect("tally").reads.renewals += 1;
        if load_accounts(&self.http, &self.client_url, user)
            .await
            .is_ok()
        {
            let accounts = user.accounts.lock().expect("accounts").clone();
            let mut expired = self.expired.lock().expect("expired");
            for (id, account_bank) in accounts {
                if account_bank == bank {
                    expired.remove(&id);
                }
            }
        }
    }

    async fn initiate(&self, user: &User, body: &Value, sent: &mut Sent, give_up: Instant) {
        while Instant::now() < give_up {
            sent.tries += 1;
            let away_when_sent = self.database_is_away();
            let response = self
                .http
                .post(format!("{}/v1/payments", self.client_url))
                .bearer_auth(&user.token)
                .header("idempotency-key", &sent.key)
                .header("x-psu-ip-address", "192.0.2.10")
                .json(body)
                .send()
                .await;
            let during_outage = away_when_sent && self.database_is_away();
            let (status, answer) = match response {
                Ok(response) => {
                    let status = response.status();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            let code = answer["error"].as_str().unwrap_or("");
            let label = format!("{} {code}", status.as_u16()).trim_end().to_owned();
            {
                let mut tally = self.tally.lock().expect("tally");
                *tally.answers.entry(label.clone()).or_default() += 1;
                if during_outage {
                    *tally
                        .answers_during_database_outage
                        .entry(label)
                        .or_default() += 1;
                }
            }
            // What a client retries with the same key: the gateway or the database away,
            // throttling, and the key's first request still in flight (a killed gateway's).
            let retry = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || code == "request_in_progress";
            if retry {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            sent.answer = Some(status.as_u16());
            if status.is_success() {
                sent.payment_id = answer["payment_id"].as_str().map(str::to_owned);
                sent.status = answer["status"].as_str().map(str::to_owned);
            } else {
                sent.error = Some(code.to_owned());
            }
            return;
        }
    }

    pub fn reads(&self) -> Reads {
        self.tally.lock().expect("tally").reads.clone()
    }

    pub fn payments(&self) -> Vec<Sent> {
        self.tally.lock().expect("tally").payments.clone()
    }

    pub fn answers(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let tally = self.tally.lock().expect("tally");
        (
            tally.answers.clone(),
            tally.answers_during_database_outage.clone(),
        )
    }
}

/// Statuses a payment never leaves.
pub fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "rejected" | "failed" | "expired")
}

async fn load_accounts(
    http: &reqwest::Client,
    client_url: &str,
    user: &User,
) -> anyhow::Result<()> {
    let body: Value = http
        .get(format!("{client_url}/v1/connections"))
        .bearer_auth(&user.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let accounts = body["connections"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let id = c["id"].as_str()?.to_owned();
                    let bank = serde_json::from_value(c["bank"].clone()).ok()?;
                    Some((id, bank))
                })
                .collect()
        })
        .unwrap_or_default();
    *user.accounts.lock().expect("accounts") = accounts;
    Ok(())
}
