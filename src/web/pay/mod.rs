//! What a player sees after scanning a sticker: the pay page, the hand-off to Stripe
//! Checkout, and the live "credits sent" page. Server-rendered, works without JavaScript.

mod checkout;
mod page;
mod thanks;
mod wallet;

pub use checkout::checkout;
pub use page::page;
pub use thanks::{status, thanks};
pub use wallet::play_from_wallet;

use actix_web::HttpResponse;

use super::{html, AppState, Refusal};
use crate::domain::{
    offered_bundles, random_token, unavailable, Bundle, Cabinet, Currency, MachineId,
};
use crate::error::{AppError, PageError};

/// The pay page's cookie: a random id per phone, for the form token and session reuse.
pub(super) const COOKIE: &str = "cp_pay";
/// The wallet cookie: the phone's wallet id, signed (see `domain::wallet`).
pub(super) const WALLET_COOKIE: &str = "cp_wallet";
/// How long a pay page's form stays valid.
const FORM_LIFETIME_SECS: i64 = 3600;

/// A cabinet that can take a payment now, and what it offers.
struct Payable {
    cabinet: Cabinet,
    bundles: Vec<Bundle>,
}

/// Either the cabinet can be paid, or the page to show instead.
enum Loaded {
    Payable(Payable),
    Unavailable(HttpResponse),
}

async fn load(state: &AppState, raw: &str) -> Result<Loaded, PageError> {
    let not_found = || {
        AppError::NotFound(
            "This code doesn't belong to a machine here. Please check the sticker or ask a member of staff.".into(),
        )
        .page("Machine not found", None)
    };
    let id = MachineId::parse(raw).map_err(|_| not_found())?;
    let cabinet = state
        .store
        .cabinet(id.as_str())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "pay page: database error");
            AppError::Unavailable(
                "We couldn't load this machine just now. Please try again in a moment.".into(),
            )
            .page("Please try again", Some(format!("/p/{raw}")))
        })?
        .ok_or_else(not_found)?;
    let connected = match &state.presence {
        Some(p) => Some(p.link(&cabinet.machine_id).await.connected),
        None => None,
    };
    if let Some(why) = unavailable(
        &cabinet,
        connected,
        state.settings.offline_after,
        chrono::Utc::now(),
    ) {
        let heading = format!("{} is unavailable", cabinet.name);
        return Ok(Loaded::Unavailable(html::message(&heading, why)));
    }
    let stored = state
        .store
        .bundles(&cabinet.machine_id)
        .await
        .unwrap_or_default();
    let currency = Currency::parse(&cabinet.currency).map_err(|_| not_found())?;
    let bundles = offered_bundles(&stored, cabinet.price_minor, &currency);
    Ok(Loaded::Payable(Payable { cabinet, bundles }))
}

/// A pay-page form that pays for one of the cabinet's bundles (by card or from a wallet).
#[derive(serde::Deserialize)]
pub struct BundleForm {
    pub bundle: usize,
    pub csrf: String,
    pub nonce: String,
}

/// A bundle form checked: its token and the phone's rate limit, then the cabinet and the
/// bundle it chose, if the cabinet can be paid now and still offers it (the same rule for
/// cards and wallets: disabled, archived or offline cabinets take nothing). The page
/// cookie, the cabinet and the bundle; else the page to show.
pub(super) async fn chosen(
    state: &AppState,
    req: &actix_web::HttpRequest,
    raw: &str,
    form: &BundleForm,
) -> Result<Result<(String, Cabinet, Bundle), HttpResponse>, PageError> {
    let back = format!("/p/{raw}");
    let cookie = guard_form(state, req, raw, &form.csrf, &form.nonce, &back).await?;
    let Payable { cabinet, bundles } = match load(state, raw).await? {
        Loaded::Payable(p) => p,
        Loaded::Unavailable(res) => return Ok(Err(res)),
    };
    match bundles.into_iter().nth(form.bundle) {
        Some(bundle) => Ok(Ok((cookie, cabinet, bundle))),
        None => Err(AppError::BadRequest(
            "That option is no longer offered. Please choose again.".into(),
        )
        .page("Please choose again", Some(back))),
    }
}

/// The form's token binds the page cookie, the cabinet and the server-issued nonce, so
/// neither the nonce (which becomes Stripe's idempotency key) nor the cabinet can be chosen
/// by the client.
pub(super) fn csrf_for(state: &AppState, cookie: &str, machine_id: &str, nonce: &str) -> String {
    state
        .keys
        .mac("pay-csrf", &format!("{cookie}|{machine_id}|{nonce}"))
}

/// A fresh nonce: random, with the time it was issued.
pub(super) fn new_nonce() -> String {
    format!("{}.{}", random_token(12), chrono::Utc::now().timestamp())
}

pub(super) fn nonce_is_fresh(nonce: &str) -> bool {
    nonce
        .rsplit_once('.')
        .and_then(|(_, t)| t.parse::<i64>().ok())
        .is_some_and(|t| {
            let age = chrono::Utc::now().timestamp() - t;
            (-60..=FORM_LIFETIME_SECS).contains(&age)
        })
}

/// The phone's pay cookie when the form's token matches it (for `scope`: a machine id,
/// or "wallet" for the wallet page) and its nonce is fresh.
pub(super) fn checked_form(
    state: &AppState,
    req: &actix_web::HttpRequest,
    scope: &str,
    csrf: &str,
    nonce: &str,
) -> Option<String> {
    use subtle::ConstantTimeEq;
    let cookie = req.cookie(COOKIE).map(|c| c.value().to_owned())?;
    let expected = csrf_for(state, &cookie, scope, nonce);
    let ok = bool::from(expected.as_bytes().ct_eq(csrf.as_bytes())) && nonce_is_fresh(nonce);
    ok.then_some(cookie)
}

/// Every player form's checks: its token ([`checked_form`]) and the per-phone and
/// per-address rate limit. Returns the phone's pay cookie, or the page to show.
pub(super) async fn guard_form(
    state: &AppState,
    req: &actix_web::HttpRequest,
    scope: &str,
    csrf: &str,
    nonce: &str,
    back: &str,
) -> Result<String, PageError> {
    let Some(cookie) = checked_form(state, req, scope, csrf, nonce) else {
        tracing::warn!(scope, "player form refused: missing or bad CSRF token");
        return Err(
            AppError::Forbidden("This page expired. Go back and choose again.".into())
                .page("Please start again", Some(back.to_owned())),
        );
    };
    let client = crate::web::client::addr(req);
    state.limits.checkout(client, &cookie).await.map_err(|refusal| {
        if matches!(refusal, Refusal::Wait(_)) {
            tracing::warn!(scope, client = ?client, "player form rate-limited");
        }
        refusal.into_page(
            |wait| {
                let secs = wait.as_secs().max(1);
                format!("Too many payment attempts from this phone. Please wait {secs} seconds and try again.")
            },
            "Payments are paused for a moment. Please try again shortly.",
            Some(back.to_owned()),
        )
    })?;
    Ok(cookie)
}

/// The pay cookie a page keeps (or a new one), and the cookie to set for it.
pub(super) fn pay_cookie(
    state: &AppState,
    req: &actix_web::HttpRequest,
) -> (String, actix_web::cookie::Cookie<'static>) {
    let value = req
        .cookie(COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 32)
        .unwrap_or_else(|| random_token(16));
    let cookie = actix_web::cookie::Cookie::build(COOKIE, value.clone())
        .path("/")
        .http_only(true)
        .secure(state.settings.public_url.starts_with("https://"))
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::days(30))
        .finish();
    (value, cookie)
}

/// The wallet this phone's cookie names, if the cookie is genuine and the wallet exists.
/// A database error is an error, never "no wallet": that would start a new one and lose
/// the phone's balance.
pub(super) async fn phone_wallet(
    state: &AppState,
    req: &actix_web::HttpRequest,
) -> Result<Option<crate::store::Wallet>, crate::store::StoreError> {
    let Some(value) = req.cookie(WALLET_COOKIE) else {
        return Ok(None);
    };
    match crate::domain::wallet::wallet_of_cookie(&state.keys, value.value()) {
        Some(id) => state.store.wallet(&id).await,
        None => Ok(None),
    }
}

/// The long-lived cookie that binds a wallet to this phone.
pub(super) fn wallet_cookie(
    state: &AppState,
    wallet_id: &str,
) -> actix_web::cookie::Cookie<'static> {
    actix_web::cookie::Cookie::build(
        WALLET_COOKIE,
        crate::domain::wallet::cookie_value(&state.keys, wallet_id),
    )
    .path("/")
    .http_only(true)
    .secure(state.settings.public_url.starts_with("https://"))
    .same_site(actix_web::cookie::SameSite::Lax)
    .max_age(actix_web::cookie::time::Duration::days(730))
    .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_expire_after_the_form_lifetime() {
        assert!(nonce_is_fresh(&new_nonce()));
        let old = chrono::Utc::now().timestamp() - FORM_LIFETIME_SECS - 1;
        assert!(!nonce_is_fresh(&format!("abc.{old}")));
        assert!(!nonce_is_fresh("no-time"));
    }
}
