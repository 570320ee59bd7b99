//! The soak's steady traffic, played as Drop's app and its users would: balance reads from
//! many sessions (renewing a connection when its consent expired), payments retried with the
//! same idempotency key until the gateway answers, and each payment's SCA approved in the
//! "browser" once the bank asks for it. Everything seen is tallied for the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankgate_actors::BankId;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

/// An account counts as having a cached balance this long after its first one was served:
/// the gateway persists last-known balances behind the answer, in batches at most
/// `balances.persist_every` (500 ms) apart, and a SIGKILL before its batch is written may lose
/// the very first one.
const PERSISTED_AFTER: Duration = Duration::from_secs(2);
/// A user connects a bank again at most this often.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Where users come back to after a consent.
const APP_RETURN: &str = "https://drop.example/connected";
/// The creditor every soak payment goes to (a valid Norwegian account number).
const CREDITOR: &str = "86011117947";

/// A user of the soak, connected to every bank.
pub struct User {
    pub token: String,
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
            for bank in BankId::ALL {
                crate::browser::connect(&client_url, &token, bank, APP_RETURN).await?;
            }
            let user = User {
                token,
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
        if crate::browser::connect(&self.client_url, &user.token, bank, APP_RETURN)
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

    /// Looks at every acknowledged payment once: records its status and approves the SCA the
    /// bank asks for. Returns how many are not final yet.
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
            if !is_final(&status) {
                moving += 1;
            }
        }
        moving
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

fn bank_of(accounts: &[(String, BankId)], id: &str) -> Option<BankId> {
    accounts.iter().find(|(a, _)| a == id).map(|(_, b)| *b)
}

fn sample(reads: &mut Reads, line: String) {
    if reads.samples.len() < 10 {
        reads.samples.push(line);
    }
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
