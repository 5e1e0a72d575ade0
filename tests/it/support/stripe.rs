//! A fake Stripe: a real HTTP server on a random port answering the endpoints coinpulse
//! calls, with Stripe's request encoding (form, bracketed keys), bearer auth,
//! idempotency-key semantics and response/error shapes. It rejects what Stripe would reject
//! (missing required parameters, unknown parameters), hosts a checkout page, and completes a
//! session by sending the signed webhook Stripe would send.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::stripe_signature;

pub const SECRET_KEY: &str = "sk_test_fake_0123456789";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub params: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
struct State {
    base: String,
    webhook_url: String,
    sessions: HashMap<String, Value>,
    idempotency: HashMap<String, (BTreeMap<String, String>, u16, Value)>,
    requests: Vec<Recorded>,
    fail_next: Option<(u16, Value)>,
    counter: u64,
    /// PaymentIntent → (amount, refunded so far, currency).
    charges: HashMap<String, (i64, i64, String)>,
    /// Events to send to coinpulse once the current request is answered.
    outgoing: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    state: Arc<Mutex<State>>,
}

type Shared = web::Data<Arc<Mutex<State>>>;

fn error(status: u16, kind: &str, message: &str, param: Option<&str>) -> (u16, Value) {
    (
        status,
        json!({"error": {"type": kind, "message": message, "param": param, "code": null, "doc_url": null}}),
    )
}

fn respond(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("Request-Id", "req_fake"))
        .json(body)
}

impl FakeStripe {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/{resource:.*}", web::post().to(api))
                .route("/checkout/{id}", web::get().to(checkout_page))
                .route("/checkout/{id}/pay", web::post().to(checkout_pay))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        tokio::spawn(server.run());
        state.lock().unwrap().base = base.clone();
        Self { base, state }
    }

    /// Where completed sessions send their webhook (the coinpulse under test).
    pub fn deliver_webhooks_to(&self, coinpulse_base: &str) {
        self.state.lock().unwrap().webhook_url = format!("{coinpulse_base}/webhooks/stripe");
    }

    pub fn fail_next(&self, status: u16, kind: &str, message: &str) {
        self.state.lock().unwrap().fail_next = Some(error(status, kind, message, None));
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many Checkout Sessions Stripe has created (failed requests create none).
    pub fn sessions_created(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }

    /// The id of the session created last.
    pub fn last_session_id(&self) -> String {
        let st = self.state.lock().unwrap();
        st.sessions
            .values()
            .max_by_key(|s| s["id"].as_str().unwrap_or("").to_owned())
            .and_then(|s| s["id"].as_str())
            .expect("a session was created")
            .to_owned()
    }

    pub fn session(&self, id: &str) -> Value {
        self.state
            .lock()
            .unwrap()
            .sessions
            .get(id)
            .cloned()
            .expect("known session")
    }

    /// A charge Stripe would know for `payment_intent` (for payments whose webhook the test
    /// sent itself): the charge is `ch_<intent without pi_>`.
    pub fn add_charge(&self, payment_intent: &str, amount: i64, currency: &str) {
        self.state
            .lock()
            .unwrap()
            .charges
            .insert(payment_intent.to_owned(), (amount, 0, currency.to_owned()));
    }

    /// Completes a session as Stripe would and delivers `checkout.session.completed`;
    /// `tamper` may change the session object first (metadata, amounts, discounts).
    pub async fn complete(&self, id: &str, tamper: impl FnOnce(&mut Value)) -> (u16, Value) {
        let (event, url) = {
            let mut st = self.state.lock().unwrap();
            let s = st.sessions.get_mut(id).expect("known session");
            s["status"] = json!("complete");
            s["payment_status"] = json!("paid");
            s["payment_intent"] = json!(format!("pi_{}", &id[3..]));
            let amount = s["amount_total"].as_i64().unwrap_or(0);
            let currency = s["currency"].as_str().unwrap_or("usd").to_owned();
            let mut obj = s.clone();
            st.charges
                .insert(format!("pi_{}", &id[3..]), (amount, 0, currency));
            tamper(&mut obj);
            st.counter += 1;
            let event = json!({
                "id": format!("evt_fake_{}_{}", st.counter, &id[3..]), "object": "event", "api_version": "2024-06-20",
                "created": chrono::Utc::now().timestamp(), "livemode": false, "pending_webhooks": 1,
                "request": {"id": null, "idempotency_key": null}, "type": "checkout.session.completed",
                "data": {"object": obj}
            });
            (event, st.webhook_url.clone())
        };
        let body = event.to_string();
        let sig = stripe_signature(&body);
        let res = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Stripe-Signature", sig)
            .body(body)
            .send()
            .await
            .expect("webhook delivered");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

/// Stripe's form encoding, flattened: `line_items[0][price_data][currency]` → value.
fn params(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("duplicate parameter {k}"));
        }
    }
    Ok(out)
}

/// Keys coinpulse may send per endpoint; a pattern `*` matches one bracketed segment.
fn allowed(resource: &str) -> &'static [&'static str] {
    match resource {
        "checkout/sessions" => &[
            "mode",
            "success_url",
            "cancel_url",
            "client_reference_id",
            "allow_promotion_codes",
            "customer",
            "metadata[*]",
            "payment_intent_data[metadata][*]",
            "line_items[*][quantity]",
            "line_items[*][price_data][currency]",
            "line_items[*][price_data][unit_amount]",
            "line_items[*][price_data][product_data][name]",
        ],
        "products" => &["name", "metadata[*]"],
        "customers" => &["email", "metadata[*]"],
        "prices" => &["currency", "unit_amount", "product", "metadata[*]"],
        "payment_links" => &[
            "line_items[*][price]",
            "line_items[*][quantity]",
            "metadata[*]",
            "payment_intent_data[metadata][*]",
        ],
        "refunds" => &[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata[*]",
        ],
        _ => &[],
    }
}

fn matches(pattern: &str, key: &str) -> bool {
    let segments = |s: &str| {
        s.split('[')
            .map(|p| p.trim_end_matches(']').to_owned())
            .collect::<Vec<_>>()
    };
    let (p, k) = (segments(pattern), segments(key));
    p.len() == k.len() && p.iter().zip(&k).all(|(a, b)| a == "*" || a == b)
}

fn sub(params: &BTreeMap<String, String>, prefix: &str) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in params {
        if let Some(rest) = k.strip_prefix(prefix) {
            if let Some(name) = rest.strip_suffix(']') {
                map.insert(name.to_owned(), json!(v));
            }
        }
    }
    Value::Object(map)
}

fn minimum(currency: &str) -> i64 {
    coinpulse::domain::minimum_charge(&coinpulse::domain::Currency::parse(currency).unwrap())
}

async fn api(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: Shared,
) -> HttpResponse {
    let resource = path.into_inner();
    let auth = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {SECRET_KEY}") {
        let (s, b) = error(
            401,
            "invalid_request_error",
            "Invalid API Key provided",
            None,
        );
        return respond(s, b);
    }
    let params = match params(&body) {
        Ok(p) => p,
        Err(e) => {
            let (s, b) = error(400, "invalid_request_error", &e, None);
            return respond(s, b);
        }
    };
    let key = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut st = state.lock().unwrap();
    st.requests.push(Recorded {
        path: format!("/v1/{resource}"),
        params: params.clone(),
        idempotency_key: key.clone(),
    });
    if let Some(k) = &key {
        if let Some((p, status, body)) = st.idempotency.get(k) {
            if p != &params {
                let (s, b) = error(400, "idempotency_error", "Keys for idempotent requests can only be used with the same parameters they were first used with.", None);
                return respond(s, b);
            }
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap())
                .insert_header(("Idempotent-Replayed", "true"))
                .json(body.clone());
        }
    }
    let (status, body) = match st.fail_next.take() {
        Some(fail) => fail,
        None => handle(&mut st, &resource, &params),
    };
    if let Some(k) = key {
        st.idempotency.insert(k, (params, status, body.clone()));
    }
    // Like Stripe, events about what a request did arrive after its answer.
    let url = st.webhook_url.clone();
    for event in std::mem::take(&mut st.outgoing) {
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let body = event.to_string();
            let _ = reqwest::Client::new()
                .post(url)
                .header("Content-Type", "application/json; charset=utf-8")
                .header("Stripe-Signature", stripe_signature(&body))
                .body(body)
                .send()
                .await;
        });
    }
    respond(status, body)
}

fn handle(st: &mut State, resource: &str, p: &BTreeMap<String, String>) -> (u16, Value) {
    let allowed = allowed(resource);
    if allowed.is_empty() {
        return error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL (POST: /v1/{resource})"),
            None,
        );
    }
    if let Some(unknown) = p.keys().find(|k| !allowed.iter().any(|a| matches(a, k))) {
        return error(
            400,
            "invalid_request_error",
            &format!("Received unknown parameter: {unknown}"),
            Some(unknown),
        );
    }
    let need = |k: &str| {
        p.get(k).cloned().ok_or_else(|| {
            error(
                400,
                "invalid_request_error",
                &format!("Missing required param: {k}."),
                Some(k),
            )
        })
    };
    st.counter += 1;
    let n = st.counter;
    let now = chrono::Utc::now().timestamp();
    let result = (|| -> Result<Value, (u16, Value)> {
        Ok(match resource {
            "checkout/sessions" => {
                if need("mode")? != "payment" {
                    return Err(error(
                        400,
                        "invalid_request_error",
                        "coinpulse only creates payment sessions",
                        Some("mode"),
                    ));
                }
                let success_url = need("success_url")?;
                let currency = need("line_items[0][price_data][currency]")?;
                let unit: i64 = need("line_items[0][price_data][unit_amount]")?
                    .parse()
                    .map_err(|_| {
                        error(
                            400,
                            "invalid_request_error",
                            "Invalid integer",
                            Some("unit_amount"),
                        )
                    })?;
                let quantity: i64 = p
                    .get("line_items[0][quantity]")
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(0);
                if quantity < 1 {
                    return Err(error(
                        400,
                        "invalid_request_error",
                        "Missing required param: line_items[0][quantity].",
                        Some("line_items[0][quantity]"),
                    ));
                }
                need("line_items[0][price_data][product_data][name]")?;
                let total = unit * quantity;
                if total < minimum(&currency) {
                    return Err(error(
                        400,
                        "invalid_request_error",
                        "The Checkout Session's total amount due must add up to at least $0.50 usd",
                        Some("line_items"),
                    ));
                }
                let id = format!(
                    "cs_test_fake{n:06}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..16]
                );
                let session = json!({
                    "id": id, "object": "checkout.session", "after_expiration": null,
                    "allow_promotion_codes": p.get("allow_promotion_codes").map(|v| v == "true"),
                    "amount_subtotal": total, "amount_total": total,
                    "automatic_tax": {"enabled": false, "liability": null, "status": null},
                    "billing_address_collection": null, "cancel_url": p.get("cancel_url"),
                    "client_reference_id": p.get("client_reference_id"), "consent": null, "consent_collection": null,
                    "created": now, "currency": currency, "custom_fields": [],
                    "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
                    "customer": p.get("customer"), "customer_creation": "if_required", "customer_details": null, "customer_email": null,
                    "expires_at": now + 86400, "invoice": null, "invoice_creation": null, "livemode": false, "locale": null,
                    "metadata": sub(p, "metadata["), "mode": "payment", "payment_intent": null, "payment_link": null,
                    "payment_method_collection": "if_required", "payment_method_options": {}, "payment_method_types": ["card"],
                    "payment_status": "unpaid", "phone_number_collection": {"enabled": false}, "recovered_from": null,
                    "setup_intent": null, "shipping_address_collection": null, "shipping_cost": null, "shipping_details": null,
                    "shipping_options": [], "status": "open", "submit_type": null, "subscription": null,
                    "success_url": success_url, "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                    "ui_mode": "hosted", "url": format!("{}/checkout/{id}", st.base)
                });
                st.sessions.insert(id, session.clone());
                session
            }
            "customers" => {
                json!({"id": format!("cus_fake{n}"), "object": "customer", "created": now,
                    "email": p.get("email"), "livemode": false, "metadata": sub(p, "metadata[")})
            }
            "products" => {
                json!({"id": format!("prod_fake{n}"), "object": "product", "active": true, "created": now,
                "livemode": false, "name": need("name")?, "metadata": sub(p, "metadata["), "type": "service", "updated": now})
            }
            "prices" => {
                let product = need("product")?;
                json!({"id": format!("price_fake{n}"), "object": "price", "active": true, "billing_scheme": "per_unit",
                    "created": now, "currency": need("currency")?, "livemode": false, "metadata": sub(p, "metadata["),
                    "product": product, "type": "one_time", "unit_amount": need("unit_amount")?.parse::<i64>().unwrap_or(0)})
            }
            "payment_links" => {
                need("line_items[0][price]")?;
                json!({"id": format!("plink_fake{n}"), "object": "payment_link", "active": true,
                    "after_completion": {"type": "hosted_confirmation", "hosted_confirmation": {"custom_message": null}, "redirect": null},
                    "allow_promotion_codes": false, "automatic_tax": {"enabled": false, "liability": null},
                    "billing_address_collection": "auto", "currency": "usd", "custom_fields": [],
                    "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
                    "customer_creation": "if_required", "livemode": false, "metadata": sub(p, "metadata["),
                    "payment_method_collection": "always", "phone_number_collection": {"enabled": false},
                    "shipping_options": [], "submit_type": "auto", "tax_id_collection": {"enabled": false},
                    "url": format!("https://buy.stripe.com/test_fake{n}")})
            }
            "refunds" => {
                let pi = need("payment_intent")?;
                let Some((amount, refunded, currency)) = st.charges.get(&pi).cloned() else {
                    return Err(error(
                        404,
                        "invalid_request_error",
                        &format!("No such payment_intent: '{pi}'"),
                        Some("payment_intent"),
                    ));
                };
                let left = amount - refunded;
                let want = match p.get("amount") {
                    Some(a) => a.parse::<i64>().unwrap_or(-1),
                    None => left,
                };
                if want <= 0 || want > left {
                    return Err(error(
                        400,
                        "invalid_request_error",
                        &format!("Refund amount ({want}) is greater than unrefunded amount on charge ({left})"),
                        Some("amount"),
                    ));
                }
                let total = refunded + want;
                st.charges
                    .insert(pi.clone(), (amount, total, currency.clone()));
                let charge_id = format!("ch_{}", &pi[3..]);
                let charge = json!({"id": charge_id, "object": "charge", "amount": amount,
                    "amount_refunded": total, "refunded": total == amount, "currency": currency,
                    "payment_intent": pi, "billing_details": {"email": null}});
                st.outgoing.push(json!({"id": format!("evt_fake_refund_{n}"), "object": "event",
                    "api_version": "2024-06-20", "created": now, "livemode": false, "pending_webhooks": 1,
                    "request": {"id": null, "idempotency_key": null}, "type": "charge.refunded",
                    "data": {"object": charge}}));
                json!({"id": format!("re_fake{n}"), "object": "refund", "amount": want,
                    "charge": charge_id, "created": now, "currency": currency, "metadata": {},
                    "payment_intent": pi, "reason": null, "status": "succeeded"})
            }
            _ => {
                return Err(error(
                    404,
                    "invalid_request_error",
                    "not implemented by the fake",
                    None,
                ))
            }
        })
    })();
    match result {
        Ok(v) => (200, v),
        Err(e) => e,
    }
}

async fn checkout_page(path: web::Path<String>, state: Shared) -> HttpResponse {
    let st = state.lock().unwrap();
    let Some(s) = st.sessions.get(path.as_str()) else {
        return HttpResponse::NotFound().body("no such session");
    };
    let name = s["metadata"]["bundle"].as_str().unwrap_or("");
    let amount = s["amount_total"].as_i64().unwrap_or(0);
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><html><head><meta name=viewport content='width=device-width'><title>Fake Stripe Checkout</title>\
         <style>body{{font:16px system-ui;margin:2rem}}button{{font-size:1.2rem;padding:1rem;width:100%}}</style></head>\
         <body><h1>Fake Stripe Checkout</h1><p>{name}: {}.{:02} {}</p><p>Test card 4242 4242 4242 4242</p>\
         <form method=post action='/checkout/{}/pay'><button id=pay>Pay</button></form></body></html>",
        amount / 100, amount % 100, s["currency"].as_str().unwrap_or("").to_uppercase(), path.as_str()
    ))
}

async fn checkout_pay(path: web::Path<String>, state: Shared) -> HttpResponse {
    let id = path.into_inner();
    let (success, base) = {
        let st = state.lock().unwrap();
        let Some(s) = st.sessions.get(&id) else {
            return HttpResponse::NotFound().finish();
        };
        (
            s["success_url"]
                .as_str()
                .unwrap_or("")
                .replace("{CHECKOUT_SESSION_ID}", &id),
            st.base.clone(),
        )
    };
    let fake = FakeStripe {
        base,
        state: state.get_ref().clone(),
    };
    let (status, body) = fake.complete(&id, |_| {}).await;
    assert_eq!(status, 200, "coinpulse refused the fake's webhook: {body}");
    HttpResponse::SeeOther()
        .insert_header(("Location", success))
        .finish()
}
