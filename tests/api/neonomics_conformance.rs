//! The simulated Neonomics against Neonomics' own documentation, one test per behaviour
//! bankgate relies on, each naming its page, driven over HTTP as an integrator who knows only
//! the documentation would.

use bankgate_actors::BankId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestSandbox, spawn_sandbox};

const REDIRECT: &str = "https://drop.example/payments/done";

/// A session at Nordea with an approved consent, its token and the debtor's first account.
struct Payer {
    sandbox: TestSandbox,
    token: String,
    session: String,
    account: Value,
}

async fn payer() -> Payer {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox
        .neonomics_session(&token, BankId::Nordea, "payer")
        .await;
    let account = sandbox
        .seeded_accounts(BankId::Nordea, "payer")
        .await
        .swap_remove(0);
    Payer {
        sandbox,
        token,
        session,
        account,
    }
}

impl Payer {
    fn call(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.sandbox
            .neonomics_request(method, &self.token, path)
            .header("x-session-id", &self.session)
            .header("x-psu-ip-address", "192.0.2.1")
    }

    /// A domestic transfer's body as the payments guide's example has it.
    fn transfer(&self, amount: &str, reference: &str) -> Value {
        json!({
            "debtorAccount": {"bban": self.account["bban"]},
            "debtorName": "Ola Nordmann",
            "creditorAccount": {"iban": "NO9386011117947"},
            "creditorName": "Kari Nordmann",
            "instrumentedAmount": amount,
            "currency": "NOK",
            "endToEndIdentification": reference,
            "remittanceInformationUnstructured": "Middag",
        })
    }

    async fn initiate(&self, product: &str, body: &Value) -> (u16, Value) {
        let response = self
            .call(Method::POST, &format!("/ics/v3/payments/{product}"))
            .header("x-redirect-url", REDIRECT)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.call(Method::GET, path).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn complete(&self, product: &str, id: &str) -> (u16, Value) {
        let response = self
            .call(
                Method::POST,
                &format!("/ics/v3/payments/{product}/{id}/complete"),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn balance(&self) -> String {
        let id = self.account_id().await;
        let (_, balances) = self.get(&format!("/ics/v3/accounts/{id}/balances")).await;
        balances[0]["amount"].to_string()
    }

    async fn account_id(&self) -> String {
        let (_, accounts) = self.get("/ics/v3/accounts").await;
        accounts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["bban"] == self.account["bban"])
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The payments guide's flow (https://docs.neonomics.io/docs/payments-1): initiation answers
/// 510 / 1428 with the authorize link in `links`, its id in `meta.id`
/// (https://docs.neonomics.io/docs/error-handling); authorize answers the bank's SCA link
/// (https://docs.neonomics.io/reference/continueauth); after the SCA the browser returns to
/// `x-redirect-url` with `resource_id` and `result`; complete, always required, settles it
/// (https://docs.neonomics.io/reference/completepayment); get payment by id tells its status
/// (https://docs.neonomics.io/reference/getpaymentbyid).
#[tokio::test]
async fn a_payment_walks_initiate_authorize_sca_complete_and_status() {
    let payer = payer().await;
    let before = payer.balance().await;
    let (status, error) = payer
        .initiate("domestic-transfer", &payer.transfer("100.00", "conf-1"))
        .await;
    assert_eq!(status, 510, "{error}");
    assert_eq!(error["errorCode"], "1428");
    assert_eq!(error["type"], "CONSENT");
    assert!(
        error["id"].is_string() && error["timestamp"].is_i64(),
        "{error}"
    );
    let link = &error["links"][0];
    assert_eq!(
        (&link["type"], &link["rel"]),
        (&json!("GET"), &json!("payment"))
    );
    let id = link["meta"]["id"].as_str().unwrap().to_owned();
    let href = link["href"].as_str().unwrap();
    assert!(href.ends_with(&format!(
        "/ics/v3/payments/domestic-transfer/{id}/authorize"
    )));

    let path = reqwest::Url::parse(href).unwrap().path().to_owned();
    let (status, authorization) = payer.get(&path).await;
    assert_eq!(status, 200, "{authorization}");
    assert_eq!(authorization["links"][0]["meta"]["paymentIds"][0], id);
    let sca = authorization["links"][0]["href"].as_str().unwrap();
    let back = payer.sandbox.complete_sca(sca).await;
    assert_eq!(back, format!("{REDIRECT}?resource_id={id}&result=OK"));

    // Authorised, not paid: the money moves on complete.
    let (_, authorised) = payer
        .get(&format!("/ics/v3/payments/domestic-transfer/{id}"))
        .await;
    assert_eq!(authorised["status"], "ACTC");
    assert_eq!(payer.balance().await, before);
    let (status, completed) = payer.complete("domestic-transfer", &id).await;
    assert_eq!(status, 200, "{completed}");
    assert_eq!(
        (&completed["paymentId"], &completed["status"]),
        (&json!(id), &json!("ACSC"))
    );
    let (_, settled) = payer
        .get(&format!("/ics/v3/payments/domestic-transfer/{id}"))
        .await;
    assert_eq!(settled["status"], "ACSC");
    assert_eq!(settled["type"], "domestic-transfer");
    assert_eq!(settled["instrumentedAmount"], "100.00");
    assert_eq!(settled["endToEndIdentification"], "conf-1");
    let after = payer.balance().await;
    assert_ne!(after, before);

    // Completing again answers the payment as it stands and pays nothing more.
    let (status, again) = payer.complete("domestic-transfer", &id).await;
    assert_eq!((status, &again["status"]), (200, &json!("ACSC")));
    assert_eq!(payer.balance().await, after);
    // The payment belongs to its session's bank and product.
    let (status, other) = payer
        .get(&format!("/ics/v3/payments/sepa-credit/{id}"))
        .await;
    assert_eq!((status, &other["errorCode"]), (510, &json!("1003")));
}

/// Complete before the SCA: the payment still needs the user's authorisation, so the answer
/// is 1428 again; a rejected SCA returns the browser with `result=FAILED` and the payment
/// `RJCT`, and completing it pays nothing.
#[tokio::test]
async fn complete_before_the_sca_asks_for_it_and_a_rejected_one_pays_nothing() {
    let payer = payer().await;
    let before = payer.balance().await;
    let (_, error) = payer
        .initiate("domestic-transfer", &payer.transfer("50.00", "conf-2"))
        .await;
    let id = error["links"][0]["meta"]["id"].as_str().unwrap().to_owned();
    let (status, early) = payer.complete("domestic-transfer", &id).await;
    assert_eq!((status, &early["errorCode"]), (510, &json!("1428")));

    let (_, authorization) = payer
        .get(&format!(
            "/ics/v3/payments/domestic-transfer/{id}/authorize"
        ))
        .await;
    let sca = authorization["links"][0]["href"].as_str().unwrap();
    let back = payer
        .sandbox
        .complete_sca(&format!("{sca}?result=reject"))
        .await;
    assert!(back.ends_with("result=FAILED"), "{back}");
    let (status, rejected) = payer.complete("domestic-transfer", &id).await;
    assert_eq!((status, &rejected["status"]), (200, &json!("RJCT")));
    assert_eq!(payer.balance().await, before);
}

/// Refusals as the error codes page lists them (https://docs.neonomics.io/docs/error-codes),
/// each a 510 client error of type BAD_REQUEST: the required fields of a payment
/// (https://docs.neonomics.io/reference/domesticscheduledpayment: debtorName, creditorName,
/// the amount, either remittance), the end user's IP, the redirect URL, the products of
/// https://docs.neonomics.io/reference/completepayment (no cross-border product; SEPA is EUR,
/// https://docs.neonomics.io/reference/sepascheduledpayment), the device id
/// (https://docs.neonomics.io/reference/createsession). Nothing refused is recorded.
#[tokio::test]
async fn payment_requests_are_refused_with_the_documented_codes() {
    let payer = payer().await;
    let good = payer.transfer("10.00", "conf-3");
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let mut misnamed = without("instrumentedAmount");
    misnamed["instructedAmount"] = json!("10.00");
    let mut no_remittance = without("remittanceInformationUnstructured");
    no_remittance
        .as_object_mut()
        .unwrap()
        .remove("remittanceInformationStructured");
    let mut bad_debtor = good.clone();
    bad_debtor["debtorAccount"] = json!({"bban": "1234"});
    for (product, body, code) in [
        ("domestic-transfer", without("debtorName"), "1002"),
        ("domestic-transfer", without("creditorName"), "1002"),
        ("domestic-transfer", misnamed, "1002"),
        ("domestic-transfer", no_remittance, "1002"),
        (
            "domestic-transfer",
            without("endToEndIdentification"),
            "1002",
        ),
        ("domestic-scheduled-transfer", good.clone(), "1002"),
        ("sepa-credit", good.clone(), "1002"),
        ("domestic-transfer", bad_debtor, "1003"),
        ("cross-border-transfer", good.clone(), "2006"),
    ] {
        let (status, error) = payer.initiate(product, &body).await;
        assert_eq!(status, 510, "{product} {body}: {error}");
        assert_eq!(error["errorCode"], code, "{product} {body}: {error}");
        assert_eq!(error["type"], "BAD_REQUEST", "{error}");
    }
    let refused = |request: reqwest::RequestBuilder| async {
        let response = request.json(&good).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (
            status,
            body["errorCode"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let path = "/ics/v3/payments/domestic-transfer";
    let no_ip = payer
        .sandbox
        .neonomics_request(Method::POST, &payer.token, path)
        .header("x-session-id", &payer.session)
        .header("x-redirect-url", REDIRECT);
    assert_eq!(refused(no_ip).await, (510, "1004".to_owned()));
    let bad_redirect = payer
        .call(Method::POST, path)
        .header("x-redirect-url", "not a url");
    assert_eq!(refused(bad_redirect).await, (510, "1005".to_owned()));
    let no_device = payer
        .sandbox
        .http
        .post(payer.sandbox.neonomics(path))
        .bearer_auth(&payer.token)
        .header("x-session-id", &payer.session)
        .header("x-psu-ip-address", "192.0.2.1")
        .header("x-redirect-url", REDIRECT);
    assert_eq!(refused(no_device).await, (510, "1001".to_owned()));
    let (status, unknown) = payer.get("/ics/v3/payments/domestic-transfer/nope").await;
    assert_eq!((status, &unknown["errorCode"]), (510, &json!("1003")));
    assert!(
        payer.sandbox.ledger("?provider=neonomics").await.is_empty(),
        "nothing refused was recorded"
    );
}

/// Neonomics finds a payment only by its id (https://docs.neonomics.io/reference/getpaymentbyid):
/// there is no look-up by end-to-end reference, and no webhook for payment statuses (the only
/// one documented is the checkout's, https://docs.neonomics.io/docs/webhook-payment-status-updates).
#[tokio::test]
async fn there_is_no_look_up_by_reference_and_no_payment_webhook() {
    let payer = payer().await;
    let (status, _) = payer
        .initiate("domestic-transfer", &payer.transfer("20.00", "conf-4"))
        .await;
    assert_eq!(status, 510);
    let (status, error) = payer
        .get("/ics/v3/payments/domestic-transfer?endToEndIdentification=conf-4")
        .await;
    assert_eq!(
        (status, &error["errorCode"]),
        (510, &json!("2006")),
        "{error}"
    );
    let response = payer
        .sandbox
        .http
        .put(payer.sandbox.control("/sandbox/webhooks/neonomics"))
        .json(&json!({"url": "http://127.0.0.1:9/hook", "secret": "a-secret-of-sixteen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// Accounts (https://docs.neonomics.io/docs/accounts-1) carry `ownerName` and `displayName`
/// (https://docs.neonomics.io/docs/changelog); balances and account types use the ISO codes
/// page's values (https://docs.neonomics.io/docs/iso-codes); an account id not from the list
/// is 1003; before the consent, a read answers 510 / 1426 of type CONSENT with the consent
/// link (https://docs.neonomics.io/docs/consent-authorization-and-sca).
#[tokio::test]
async fn accounts_and_balances_answer_in_the_documented_shape() {
    let payer = payer().await;
    let (status, accounts) = payer.get("/ics/v3/accounts").await;
    assert_eq!(status, 200);
    for account in accounts.as_array().unwrap() {
        assert!(account["ownerName"].is_string(), "{account}");
        assert!(account["displayName"].is_string(), "{account}");
        assert!(
            ["CACC", "SVGS"].contains(&account["accountType"].as_str().unwrap()),
            "{account}"
        );
    }
    let id = payer.account_id().await;
    let (_, balances) = payer.get(&format!("/ics/v3/accounts/{id}/balances")).await;
    assert_eq!(balances[0]["type"], "AVLB", "{balances}");
    let (status, unknown) = payer.get("/ics/v3/accounts/nope/balances").await;
    assert_eq!((status, &unknown["errorCode"]), (510, &json!("1003")));

    let response = payer
        .sandbox
        .neonomics_request(Method::POST, &payer.token, "/ics/v3/session")
        .json(&json!({"bankId": payer.sandbox.neonomics_bank_id(&payer.token, BankId::Dnb).await}))
        .send()
        .await
        .unwrap();
    let session: Value = response.json().await.unwrap();
    let fresh = session["sessionId"].as_str().unwrap();
    let response = payer
        .sandbox
        .neonomics_request(Method::GET, &payer.token, "/ics/v3/accounts")
        .header("x-session-id", fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 510);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        (&error["errorCode"], &error["type"]),
        (&json!("1426"), &json!("CONSENT"))
    );
    assert_eq!(error["source"], "C");
    assert_eq!(
        error["links"][0]["href"],
        format!("/ics/v3/consent/{fresh}")
    );
    // Get Consent takes a required scope (https://docs.neonomics.io/reference/initiateconsent-1).
    let consent = |query: &'static str| {
        payer
            .sandbox
            .neonomics_request(
                Method::GET,
                &payer.token,
                &format!("/ics/v3/consent/{fresh}{query}"),
            )
            .header("x-redirect-url", REDIRECT)
            .send()
    };
    let unscoped: Value = consent("").await.unwrap().json().await.unwrap();
    assert_eq!(unscoped["errorCode"], "1002");
    let scoped = consent("?scope=accounts").await.unwrap();
    assert_eq!(scoped.status(), 200);
}

/// A session names its bank by Neonomics' own id for it, the `id` of `GET /ics/v3/banks`, not
/// its BIC (https://docs.neonomics.io/reference/createsession); a session without a known one
/// is refused 1002 (https://docs.neonomics.io/docs/error-codes: "Create Session: Include …
/// bankId").
#[tokio::test]
async fn a_session_names_its_bank_by_the_bank_lists_id_not_its_bic() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let banks: Vec<Value> = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/banks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for bank in &banks {
        assert_ne!(bank["id"], bank["bic"], "{bank}");
        assert!(
            bank["personalIdentificationRequired"].is_boolean(),
            "{bank}"
        );
        assert!(["AVAILABLE", "UNAVAILABLE"].contains(&bank["status"].as_str().unwrap()));
    }
    let session = |bank_id: Value| {
        sandbox
            .neonomics_request(Method::POST, &token, "/ics/v3/session")
            .json(&json!({"bankId": bank_id}))
            .send()
    };
    let dnb = banks
        .iter()
        .find(|b| b["bic"] == BankId::Dnb.bic())
        .unwrap();
    let opened = session(dnb["id"].clone()).await.unwrap();
    assert_eq!(opened.status(), 200);
    assert!(opened.json::<Value>().await.unwrap()["sessionId"].is_string());
    let by_bic = session(json!(BankId::Dnb.bic())).await.unwrap();
    assert_eq!(by_bic.status(), 510);
    assert_eq!(by_bic.json::<Value>().await.unwrap()["errorCode"], "1002");
    let path = format!("/ics/v3/banks/{}", dnb["id"].as_str().unwrap());
    let one: Value = sandbox
        .neonomics_request(Method::GET, &token, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["bic"], BankId::Dnb.bic());
}
