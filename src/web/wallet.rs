//! The player's wallet page (`/w`): balance, history, top-up packages; and `POST /w/topup`,
//! which creates the wallet on the first top-up and hands the player to Stripe Checkout.
//! Phone-first and server-rendered, like the pay page.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::pay::{
    checked_form, csrf_for, guard_form, new_nonce, pay_cookie, phone_wallet, wallet_cookie,
};
use super::{html, AppState, Refusal};
use crate::domain::wallet::{custom_topup, default_packages, TopupPackage, WalletLimits};
use crate::domain::{Currency, LedgerKind, MachineId, Money};
use crate::error::{AppError, PageError};
use crate::store::{Topup, Wallet};
use crate::stripe::api::NewTopupCheckout;

/// The form scope of the wallet page's token (a pay page's is its machine id).
const SCOPE: &str = "wallet";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WalletQuery {
    /// The cabinet the player came from, to go back to.
    from: String,
    currency: String,
    /// The top-up Stripe just sent the player back from.
    topup: String,
}

pub struct Line {
    pub when: String,
    pub what: String,
    pub amount: String,
    pub plus: bool,
}

pub struct PackageView {
    pub index: usize,
    pub pay: String,
    pub credit: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "pay/wallet.html")]
struct WalletPage {
    balance: Option<String>,
    lines: Vec<Line>,
    packages: Vec<PackageView>,
    /// "$5.00 to $500.00": what "Other amount" accepts.
    range: String,
    /// What the player should know before paying: a balance limit, expiry.
    terms: Vec<String>,
    currency: String,
    from: String,
    back: Option<(String, String)>,
    /// "received" / "waiting" for the top-up the player just paid.
    topup_state: Option<&'static str>,
    csrf: String,
    nonce: String,
    email: Option<String>,
    has_wallet: bool,
    mail: bool,
}

async fn currency_for(state: &AppState, wallet: Option<&Wallet>, q: &WalletQuery) -> String {
    if let Some(w) = wallet {
        return w.currency.clone();
    }
    if let Ok(id) = MachineId::parse(&q.from) {
        if let Ok(Some(c)) = state.store.cabinet(id.as_str()).await {
            return c.currency;
        }
    }
    if let Ok(c) = Currency::parse(&q.currency) {
        return c.as_str().to_owned();
    }
    match state.store.cabinets().await {
        Ok(all) => all.first().map(|c| c.currency.clone()),
        Err(_) => None,
    }
    .unwrap_or_else(|| "usd".into())
}

/// The owner's top-up limits for `currency`, or the defaults.
pub(crate) async fn limits(
    state: &AppState,
    currency: &Currency,
) -> Result<WalletLimits, AppError> {
    Ok(state
        .store
        .wallet_limits(currency.as_str())
        .await?
        .unwrap_or_else(|| WalletLimits::default_for(currency)))
}

/// A player-typed amount in the main unit: `15`, `15.50`, `15,50`, `$15`.
fn typed_amount(text: &str, currency: &Currency) -> Option<i64> {
    let t = text
        .trim()
        .trim_start_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ',')
        .replace(',', ".");
    let t = if t.contains('.') || currency.decimals() == 0 {
        t
    } else {
        format!("{t}.0")
    };
    crate::domain::parse_amount(&t, currency)
        .ok()
        .filter(|m| *m > 0)
}

async fn packages(state: &AppState, currency: &str) -> Result<Vec<TopupPackage>, AppError> {
    let stored = state.store.topup_packages(currency).await?;
    if !stored.is_empty() {
        return Ok(stored);
    }
    let c = Currency::parse(currency).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(default_packages(&c))
}

fn describe(kind: LedgerKind, reason: &str) -> String {
    match kind {
        LedgerKind::Topup => "Top-up".into(),
        LedgerKind::Bonus => "Top-up bonus".into(),
        LedgerKind::Play => format!("Played: {reason}"),
        LedgerKind::Refund => "Refund".into(),
        LedgerKind::Adjustment => format!("Adjustment: {reason}"),
        LedgerKind::Expiry => "Expired balance".into(),
    }
}

pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<WalletQuery>,
) -> Result<HttpResponse, PageError> {
    let trouble = |e: AppError| e.page("Please try again", Some("/w".into()));
    let wallet = phone_wallet(&state, &req)
        .await
        .map_err(|e| trouble(e.into()))?;
    let currency = currency_for(&state, wallet.as_ref(), &q).await;
    let packages = packages(&state, &currency).await.map_err(trouble)?;
    let parsed =
        Currency::parse(&currency).map_err(|e| trouble(AppError::BadRequest(e.to_string())))?;
    let limits = limits(&state, &parsed).await.map_err(trouble)?;
    let mut terms = Vec::new();
    if let Some(max) = limits.max_balance_minor {
        terms.push(format!(
            "A balance can hold up to {}.",
            Money::format(max, &currency)
        ));
    }
    if let Some(months) = crate::wallets::expiry_months(&state.store)
        .await
        .map_err(|e| trouble(e.into()))?
    {
        terms.push(format!(
            "Unused balance expires {months} months after its last use."
        ));
    }
    let mut lines = Vec::new();
    let mut topup_state = None;
    if let Some(w) = &wallet {
        for row in state
            .store
            .ledger(&w.id, 50)
            .await
            .map_err(|e| trouble(e.into()))?
        {
            lines.push(Line {
                when: row
                    .created_at
                    .get(..16)
                    .unwrap_or(&row.created_at)
                    .replace('T', " "),
                what: describe(row.kind, &row.reason),
                amount: Money::format(row.amount_minor.abs(), &w.currency),
                plus: row.amount_minor > 0,
            });
        }
        if !q.topup.is_empty() {
            let topups: Vec<Topup> = state.store.topups(&w.id).await.unwrap_or_default();
            topup_state = topups
                .iter()
                .find(|t| t.checkout_session_id == q.topup)
                .map(|t| {
                    if t.status == "paid" {
                        "received"
                    } else {
                        "waiting"
                    }
                });
        }
    }
    let back = match MachineId::parse(&q.from) {
        Ok(id) => state
            .store
            .cabinet(id.as_str())
            .await
            .ok()
            .flatten()
            .map(|c| (format!("/p/{}", c.machine_id), c.name)),
        Err(_) => None,
    };
    let (cookie_value, cookie) = pay_cookie(&state, &req);
    let nonce = new_nonce();
    let page = WalletPage {
        balance: wallet
            .as_ref()
            .map(|w| Money::format(w.balance_minor, &w.currency)),
        lines,
        packages: packages
            .iter()
            .enumerate()
            .map(|(index, p)| PackageView {
                index,
                pay: Money::format(p.pay_minor, &currency),
                credit: Money::format(p.credit_minor, &currency),
                label: p.label.clone(),
            })
            .collect(),
        range: format!(
            "{} to {}",
            Money::format(limits.min_topup_minor, &currency),
            Money::format(limits.max_topup_minor, &currency)
        ),
        terms,
        currency,
        from: back.as_ref().map(|_| q.from.clone()).unwrap_or_default(),
        back,
        topup_state,
        csrf: csrf_for(&state, &cookie_value, SCOPE, &nonce),
        nonce,
        email: wallet.as_ref().and_then(|w| w.email.clone()),
        has_wallet: wallet.is_some(),
        mail: state.mailer.is_configured(),
    };
    let mut res = html::page(StatusCode::OK, &page);
    let _ = res.add_cookie(&cookie);
    Ok(res)
}

#[derive(Deserialize)]
pub struct TopupForm {
    /// A package's index, or "other" for `amount`.
    package: String,
    /// The amount typed for "Other amount", in the main unit.
    #[serde(default)]
    amount: String,
    currency: String,
    #[serde(default)]
    from: String,
    csrf: String,
    nonce: String,
}

/// Starts a top-up: the wallet (created now if the phone has none) and what it will get
/// are stored before the player is sent to Stripe.
pub async fn topup(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<TopupForm>,
) -> Result<HttpResponse, PageError> {
    let back = Some(format!("/w?from={}", form.from));
    let cookie = guard_form(
        &state,
        &req,
        SCOPE,
        &form.csrf,
        &form.nonce,
        &format!("/w?from={}", form.from),
    )
    .await?;
    let currency = Currency::parse(&form.currency).map_err(|e| {
        AppError::BadRequest(e.to_string()).page("Please choose again", back.clone())
    })?;
    let packages = packages(&state, currency.as_str())
        .await
        .map_err(|e| e.page("Please try again", back.clone()))?;
    let limits = limits(&state, &currency)
        .await
        .map_err(|e| e.page("Please try again", back.clone()))?;
    let range = format!(
        "Top-ups are from {} to {}.",
        Money::format(limits.min_topup_minor, currency.as_str()),
        Money::format(limits.max_topup_minor, currency.as_str())
    );
    let package = if form.package == "other" {
        typed_amount(&form.amount, &currency)
            .and_then(|minor| custom_topup(minor, &packages, &limits).ok())
            .ok_or_else(|| {
                AppError::Unprocessable(format!("Please type an amount. {range}"))
                    .page("Please choose again", back.clone())
            })?
    } else {
        let chosen = form.package.parse::<usize>().ok();
        match chosen.and_then(|i| packages.get(i)) {
            Some(p) => p.clone(),
            None => {
                return Err(
                    AppError::BadRequest("That top-up is no longer offered.".into())
                        .page("Please choose again", back),
                )
            }
        }
    };
    let current = phone_wallet(&state, &req)
        .await
        .map_err(|e| AppError::from(e).page("Please try again", back.clone()))?;
    let wallet = match current {
        Some(w) if w.currency == currency.as_str() => w,
        Some(w) => {
            return Err(AppError::Conflict(format!(
                "Your wallet is in {}.",
                w.currency.to_ascii_uppercase()
            ))
            .page("Different currency", back))
        }
        // The new wallet's id comes from this form, so a double tap makes one wallet.
        None => state
            .store
            .create_wallet(
                &state
                    .keys
                    .mac("new wallet", &format!("{cookie}|{}", form.nonce))[..32],
                currency.as_str(),
            )
            .await
            .map_err(|e| AppError::from(e).page("Please try again", back.clone()))?,
    };
    if let Some(max) = limits.exceeded_by(wallet.balance_minor, package.credit_minor) {
        return Err(AppError::Unprocessable(format!(
            "A balance can hold up to {}; this top-up would take yours to {}.",
            Money::format(max, currency.as_str()),
            Money::format(
                wallet.balance_minor + package.credit_minor,
                currency.as_str()
            )
        ))
        .page("Top-up too large", back));
    }
    let customer = receipts_customer(&state, &wallet).await;
    let public = &state.settings.public_url;
    let from: String = form_urlencoded::byte_serialize(form.from.as_bytes()).collect();
    let success = format!("{public}/w?topup={{CHECKOUT_SESSION_ID}}&from={from}");
    let cancel = format!("{public}/w?from={from}");
    let name = format!(
        "Arcade balance: {}",
        Money::format(package.credit_minor, currency.as_str())
    );
    let key = format!("topup-{}-{}", wallet.id, form.nonce);
    let created = state
        .stripe
        .create_topup_checkout(&NewTopupCheckout {
            wallet_id: &wallet.id,
            amount_minor: package.pay_minor,
            currency: currency.as_str(),
            product_name: &name,
            success_url: &success,
            cancel_url: &cancel,
            idempotency_key: &key,
            customer: customer.as_deref(),
        })
        .await;
    let (session_id, url) = match created {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(wallet = %wallet.id, error = %e, "top-up could not start");
            return Err(AppError::BadGateway(
                "We couldn't reach the payment service. You have not been charged. Please try again.".into(),
            )
            .page("Top-up couldn't start", back));
        }
    };
    // Stripe answers the same session for a repeated key; store it once.
    let stored = Topup {
        checkout_session_id: session_id.clone(),
        wallet_id: wallet.id.clone(),
        pay_minor: package.pay_minor,
        credit_minor: package.credit_minor,
        currency: currency.as_str().to_owned(),
        url: url.clone(),
        status: "open".into(),
        payment_intent_id: None,
        created_at: crate::domain::now_db(),
        refunded_minor: 0,
        note: None,
    };
    if let Err(e) = state.store.insert_topup(&stored).await {
        if !e.is_unique_violation() {
            tracing::error!(error = %e, "top-up could not be stored");
            return Err(AppError::Unavailable(
                "Something went wrong on our side. You have not been charged. Please try again."
                    .into(),
            )
            .page("Top-up couldn't start", back));
        }
    }
    tracing::info!(wallet = %wallet.id, session = %session_id, pay = package.pay_minor,
        credit = package.credit_minor, "top-up started");
    let mut res = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .finish();
    let _ = res.add_cookie(&wallet_cookie(&state, &wallet.id));
    Ok(res)
}

/// The Stripe Customer a wallet with an email pays as, so Stripe's receipts reach that
/// address (created once, then remembered). None without an email, or when Stripe could
/// not make one: the top-up goes ahead without it.
async fn receipts_customer(state: &AppState, wallet: &Wallet) -> Option<String> {
    if let Some(id) = &wallet.stripe_customer_id {
        return Some(id.clone());
    }
    let email = wallet.email.as_deref()?;
    match state.stripe.create_customer(email, &wallet.id).await {
        Ok(id) => {
            if let Err(e) = state.store.set_wallet_customer(&wallet.id, &id).await {
                tracing::warn!(wallet = %wallet.id, error = %e, "Stripe customer not remembered");
            }
            Some(id)
        }
        Err(e) => {
            tracing::warn!(wallet = %wallet.id, error = %e, "no Stripe customer for receipts; topping up without");
            None
        }
    }
}

/// How long a sign-in link works.
const SIGNIN_MINUTES: i64 = 30;

#[derive(Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    email: String,
    csrf: String,
    nonce: String,
}

fn notice(heading: &str, body: &str) -> HttpResponse {
    html::message_page(HttpResponse::Ok(), heading, body, Some("/w"))
}

/// Emails a one-time link for `link` (the address in it) and stores its hash.
async fn email_link(
    state: &AppState,
    link: crate::store::WalletLink,
    subject: &str,
    intro: &str,
) -> Result<(), AppError> {
    let token = crate::domain::random_token(16);
    state
        .store
        .insert_wallet_link(&link, &crate::domain::token_hash(&token))
        .await?;
    let url = format!("{}/w/signin/{token}", state.settings.public_url);
    let body = format!(
        "{intro}\n\n{url}\n\nIt works once, for {SIGNIN_MINUTES} minutes. If you did not ask for it, ignore this email.\n"
    );
    state
        .mailer
        .send(&link.email, subject, body)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "wallet email failed");
            AppError::BadGateway("We couldn't send the email just now. Please try again.".into())
        })
}

fn new_link(wallet_id: &str, email: &str, purpose: &str) -> crate::store::WalletLink {
    crate::store::WalletLink {
        wallet_id: wallet_id.to_owned(),
        email: email.to_owned(),
        purpose: purpose.to_owned(),
        expires_at: crate::domain::db_time(
            chrono::Utc::now() + chrono::Duration::minutes(SIGNIN_MINUTES),
        ),
    }
}

/// The checks both email forms share: the form's token, the address, the rate limit and
/// a configured mail server. Returns the normalised address.
async fn email_form(
    req: &HttpRequest,
    state: &AppState,
    form: &EmailForm,
) -> Result<Result<String, HttpResponse>, PageError> {
    let back = Some("/w".to_owned());
    if checked_form(state, req, SCOPE, &form.csrf, &form.nonce).is_none() {
        return Err(
            AppError::Forbidden("This page expired. Please try again.".into())
                .page("Please start again", back),
        );
    }
    let email = crate::accounts::normalize_email(&form.email).map_err(|e| {
        AppError::Unprocessable(e.to_string()).page("Please check the email", back.clone())
    })?;
    let client = crate::web::client::addr(req);
    state
        .limits
        .signin(client, &email)
        .await
        .map_err(|refusal| {
            if matches!(refusal, Refusal::Wait(_)) {
                tracing::warn!(client = ?client, "wallet email links rate-limited");
            }
            refusal.into_page(
                |wait| {
                    let minutes = wait.as_secs().div_ceil(60).max(1);
                    format!("Too many emails asked for. Please try again in {minutes} minute(s).")
                },
                "Sign-in links are paused for a moment. Please try again shortly.",
                back.clone(),
            )
        })?;
    if !state.mailer.is_configured() {
        return Ok(Err(notice(
            "Email is not set up here",
            "This arcade has not set up email. Please ask a member of staff.",
        )));
    }
    Ok(Ok(email))
}

/// `POST /w/email`: emails a confirmation link; the address is the wallet's once the
/// link is used (nobody can put someone else's address on their wallet).
pub async fn set_email(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<EmailForm>,
) -> Result<HttpResponse, PageError> {
    let back = Some("/w".to_owned());
    let email = match email_form(&req, &state, &form).await? {
        Ok(e) => e,
        Err(page) => return Ok(page),
    };
    let wallet = phone_wallet(&state, &req)
        .await
        .map_err(|e| AppError::from(e).page("Please try again", back.clone()))?;
    let Some(wallet) = wallet else {
        return Ok(notice(
            "No wallet on this phone yet",
            "Top up first; then add your email.",
        ));
    };
    email_link(
        &state,
        new_link(&wallet.id, &email, "verify"),
        "Confirm your arcade wallet email",
        "Open this link to use this address for your arcade wallet:",
    )
    .await
    .map_err(|e| e.page("Email not sent", back))?;
    Ok(notice(
        "Check your email",
        &format!("We sent a link to {email}. Open it to confirm the address."),
    ))
}

/// `POST /w/signin`: emails a one-time link to the wallet that uses this address. The
/// answer is the same whether or not one does, so nobody learns who plays here.
pub async fn send_signin(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<EmailForm>,
) -> Result<HttpResponse, PageError> {
    let back = Some("/w".to_owned());
    let email = match email_form(&req, &state, &form).await? {
        Ok(e) => e,
        Err(page) => return Ok(page),
    };
    if let Ok(Some(wallet)) = state.store.wallet_by_email(&email).await {
        email_link(
            &state,
            new_link(&wallet.id, &email, "signin"),
            "Your arcade wallet",
            "Open this link on the phone you want to play with:",
        )
        .await
        .map_err(|e| e.page("Email not sent", back))?;
        tracing::info!(wallet = %wallet.id, "wallet sign-in link sent");
    }
    Ok(notice(
        "Check your email",
        &format!("If a wallet uses {email}, a sign-in link is on its way. It works once, for {SIGNIN_MINUTES} minutes."),
    ))
}

#[derive(Template)]
#[template(path = "pay/wallet_link.html")]
struct LinkPage {
    heading: String,
    body: String,
    warning: Option<String>,
    action: String,
    button: &'static str,
    csrf: String,
    nonce: String,
}

const LINK_SCOPE: &str = "wallet-link";

fn link_gone() -> HttpResponse {
    html::message_page(
        HttpResponse::Gone(),
        "This link no longer works",
        "Email links work once, for 30 minutes. Ask for a new one on the wallet page.",
        Some("/w"),
    )
}

/// `GET /w/signin/{token}`: says what the link will do and asks to confirm. Opening it
/// changes nothing (mail scanners open links; a link someone else sent must not swap
/// this phone's wallet unasked).
pub async fn signin(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let link = match state
        .store
        .wallet_link(&crate::domain::token_hash(&path))
        .await
    {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(link_gone()),
        Err(e) => return Err(AppError::from(e).page("Please try again", None)),
    };
    let current = phone_wallet(&state, &req).await.ok().flatten();
    let (heading, body, warning, button) = match link.purpose.as_str() {
        "verify" => (
            "Confirm your email".to_owned(),
            format!("Use {} for your arcade wallet?", link.email),
            None,
            "Confirm",
        ),
        _ => {
            let warning = current
                .filter(|w| w.id != link.wallet_id && w.balance_minor > 0)
                .map(|w| {
                    let reach = match &w.email {
                        Some(e) => format!("it stays yours and comes back with a link to {e}"),
                        None => "it has no email, so this phone is the only way to it".to_owned(),
                    };
                    format!(
                        "This phone's wallet holds {}: {reach}.",
                        Money::format(w.balance_minor, &w.currency)
                    )
                });
            (
                "Use your wallet on this phone".to_owned(),
                format!("Sign in to the wallet of {} on this phone?", link.email),
                warning,
                "Use this wallet here",
            )
        }
    };
    let (cookie_value, cookie) = pay_cookie(&state, &req);
    let nonce = new_nonce();
    let page = LinkPage {
        heading,
        body,
        warning,
        action: format!("/w/signin/{}", path.as_str()),
        button,
        csrf: csrf_for(&state, &cookie_value, LINK_SCOPE, &nonce),
        nonce,
    };
    let mut res = html::page(StatusCode::OK, &page);
    let _ = res.add_cookie(&cookie);
    Ok(res)
}

#[derive(Deserialize)]
pub struct LinkForm {
    csrf: String,
    nonce: String,
}

/// `POST /w/signin/{token}`: uses the link, once.
pub async fn use_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, PageError> {
    if checked_form(&state, &req, LINK_SCOPE, &form.csrf, &form.nonce).is_none() {
        return Err(
            AppError::Forbidden("This page expired. Open the link again.".into())
                .page("Please start again", None),
        );
    }
    let link = match state
        .store
        .use_wallet_link(&crate::domain::token_hash(&path))
        .await
    {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(link_gone()),
        Err(e) => return Err(AppError::from(e).page("Please try again", None)),
    };
    match link.purpose.as_str() {
        "verify" => {
            state
                .store
                .set_wallet_email(&link.wallet_id, &link.email)
                .await
                .map_err(|e| AppError::from(e).page("Please try again", None))?;
            tracing::info!(wallet = %link.wallet_id, "wallet email confirmed");
            Ok(html::see_other("/w"))
        }
        _ => {
            tracing::info!(wallet = %link.wallet_id, "wallet signed in on a phone");
            let mut res = html::see_other("/w");
            let _ = res.add_cookie(&wallet_cookie(&state, &link.wallet_id));
            Ok(res)
        }
    }
}
