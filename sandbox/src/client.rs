//! `SandboxClient`: the control API (`control.rs`) from the other side, with the sandbox's own
//! types on the wire. Tests, benches, the demo and the soak drive the sandbox through it, so a
//! renamed field or route breaks them at compile time instead of as a silent `null`.

use bankgate_actors::{BankId, WebhookSource};
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::control::{LedgerFilter, RequestCount};
use crate::faults::{Fault, FaultSpec};
use crate::webhooks::WebhookTarget;
use crate::world::{Account, Consent, Payment};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The sandbox could not be reached, or its answer could not be read.
    #[error("sandbox control call failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The sandbox answered with an error status (its body is bankgate's error envelope).
    #[error("sandbox refused {what}: {status} {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
}

/// A client of one sandbox's control listener.
#[derive(Debug, Clone)]
pub struct SandboxClient {
    /// Base URL of the control listener (`Sandbox::control_url`).
    url: String,
    http: reqwest::Client,
}

impl SandboxClient {
    pub fn new(control_url: impl Into<String>) -> SandboxClient {
        SandboxClient::with_http(control_url, reqwest::Client::new())
    }

    /// Uses `http` for the calls, for callers that tune its connection pool.
    pub fn with_http(control_url: impl Into<String>, http: reqwest::Client) -> SandboxClient {
        SandboxClient {
            url: control_url.into(),
            http,
        }
    }

    /// Injects a fault and returns it as the sandbox holds it (with its id).
    pub async fn add_fault(&self, spec: &FaultSpec) -> Result<Fault, ControlError> {
        let request = self.request(Method::POST, "/sandbox/faults").json(spec);
        json(send(request, "the fault").await?).await
    }

    /// The active faults.
    pub async fn faults(&self) -> Result<Vec<Fault>, ControlError> {
        #[derive(Deserialize)]
        struct Faults {
            faults: Vec<Fault>,
        }
        let request = self.request(Method::GET, "/sandbox/faults");
        Ok(json::<Faults>(send(request, "the fault list").await?)
            .await?
            .faults)
    }

    /// Lifts every fault.
    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        send(
            self.request(Method::DELETE, "/sandbox/faults"),
            "clearing faults",
        )
        .await?;
        Ok(())
    }

    /// Lifts one fault; an unknown id is `Refused` with 404.
    pub async fn remove_fault(&self, id: u64) -> Result<(), ControlError> {
        let request = self.request(Method::DELETE, &format!("/sandbox/faults/{id}"));
        send(request, &format!("removing fault {id}")).await?;
        Ok(())
    }

    /// The payments the banks recorded that match `filter`.
    pub async fn ledger(&self, filter: &LedgerFilter) -> Result<Vec<Payment>, ControlError> {
        #[derive(Deserialize)]
        struct Ledger {
            entries: Vec<Payment>,
        }
        let query = serde_urlencoded::to_string(filter).expect("the filter is a flat struct");
        let path = if query.is_empty() {
            "/sandbox/ledger".to_owned()
        } else {
            format!("/sandbox/ledger?{query}")
        };
        let request = self.request(Method::GET, &path);
        Ok(json::<Ledger>(send(request, "the ledger").await?)
            .await?
            .entries)
    }

    /// The calls received per provider, bank and service.
    pub async fn requests(&self) -> Result<Vec<RequestCount>, ControlError> {
        #[derive(Deserialize)]
        struct Requests {
            requests: Vec<RequestCount>,
        }
        let request = self.request(Method::GET, "/sandbox/requests");
        Ok(json::<Requests>(send(request, "the request counts").await?)
            .await?
            .requests)
    }

    /// The accounts `psu` holds at `bank`, with their balances as the bank has them.
    pub async fn accounts(&self, bank: BankId, psu: &str) -> Result<Vec<Account>, ControlError> {
        #[derive(Deserialize)]
        struct Accounts {
            accounts: Vec<Account>,
        }
        let query = serde_urlencoded::to_string([("bank", bank.as_str()), ("psu", psu)])
            .expect("two strings");
        let request = self.request(Method::GET, &format!("/sandbox/accounts?{query}"));
        Ok(json::<Accounts>(send(request, "the accounts").await?)
            .await?
            .accounts)
    }

    /// Every consent the banks hold, with either provider.
    pub async fn consents(&self) -> Result<Vec<Consent>, ControlError> {
        #[derive(Deserialize)]
        struct Consents {
            consents: Vec<Consent>,
        }
        let request = self.request(Method::GET, "/sandbox/consents");
        Ok(json::<Consents>(send(request, "the consents").await?)
            .await?
            .consents)
    }

    /// Expires a consent now, as its validity running out would; returns it expired.
    pub async fn expire_consent(&self, id: &str) -> Result<Consent, ControlError> {
        let request = self.request(Method::POST, &format!("/sandbox/consents/{id}/expire"));
        json(send(request, &format!("expiring consent {id}")).await?).await
    }

    /// Points `provider`'s signed status pushes at `target`, as an operator does in the
    /// provider's portal.
    pub async fn register_webhook(
        &self,
        source: WebhookSource,
        target: &WebhookTarget,
    ) -> Result<(), ControlError> {
        let request = self
            .request(Method::PUT, &format!("/sandbox/webhooks/{source}"))
            .json(target);
        send(request, &format!("the {source} webhook")).await?;
        Ok(())
    }

    /// Registers each source's webhook in turn.
    pub async fn register_webhooks(
        &self,
        targets: impl IntoIterator<Item = (WebhookSource, WebhookTarget)>,
    ) -> Result<(), ControlError> {
        for (source, target) in targets {
            self.register_webhook(source, &target).await?;
        }
        Ok(())
    }

    /// Stops `source`'s status pushes.
    pub async fn remove_webhook(&self, source: WebhookSource) -> Result<(), ControlError> {
        let request = self.request(Method::DELETE, &format!("/sandbox/webhooks/{source}"));
        send(request, &format!("removing the {source} webhook")).await?;
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }
}

/// Sends `request`, turning an error status into `Refused` naming `what` was asked for.
async fn send(request: RequestBuilder, what: &str) -> Result<Response, ControlError> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(ControlError::Refused {
        what: what.to_owned(),
        status: status.as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, ControlError> {
    Ok(response.json().await?)
}
