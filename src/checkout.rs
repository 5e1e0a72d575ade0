//! A player's checkout: from a chosen bundle to a Stripe Checkout Session (reusing the
//! one this phone already has open for it), and from a session back to where it stands.

use crate::domain::{db_time, now_db, Bundle, Cabinet, CheckoutStatus, Keys, Stage};
use crate::store::{Store, StoreError, StoredSession};
use crate::stripe::api::{NewCheckout, StripeApi, StripeApiError};

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("could not create a Stripe Checkout Session: {0}")]
    Stripe(#[from] StripeApiError),
    #[error("could not store the checkout session: {0}")]
    Store(#[from] StoreError),
}

/// How long an open session is offered again to the phone that opened it (Stripe's own
/// sessions expire after 24 hours).
const REUSE_WITHIN: chrono::Duration = chrono::Duration::hours(23);

/// What a checkout needs besides the cabinet and bundle.
pub struct Buyer<'a> {
    /// Keyed hash of the pay page cookie: the same phone, without storing the cookie.
    pub id: String,
    /// The pay form's server-issued nonce: one Stripe idempotency key per form.
    pub nonce: &'a str,
}

/// Returns the Checkout URL to send the player to. Coming back to the same bundle (the
/// back button, a second tap from a new page) leads to the session already open rather
/// than to a second one.
pub async fn start(
    store: &Store,
    stripe: &StripeApi,
    keys: &Keys,
    public_url: &str,
    cabinet: &Cabinet,
    bundle: &Bundle,
    buyer: Buyer<'_>,
) -> Result<String, CheckoutError> {
    let recent = db_time(chrono::Utc::now() - REUSE_WITHIN);
    match store
        .open_checkout_session(
            &buyer.id,
            &cabinet.machine_id,
            bundle.credits,
            bundle.price_minor,
            &recent,
        )
        .await
    {
        Ok(Some(open)) => {
            tracing::info!(machine_id = %cabinet.machine_id, session = %open.id, "checkout reuses the open session");
            return Ok(open.url);
        }
        Ok(None) => {}
        // Not finding it only costs a second session; the payment itself is safe.
        Err(e) => tracing::warn!(error = %e, "could not look for an open checkout session"),
    }
    let request = NewCheckout {
        machine_id: cabinet.machine_id.clone(),
        credits: bundle.credits,
        amount_minor: bundle.price_minor,
        currency: cabinet.currency.clone(),
        product_name: cabinet.product_name(bundle),
        bundle: bundle.title(),
        success_url: format!(
            "{public_url}/p/{}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
            cabinet.machine_id
        ),
        cancel_url: format!("{public_url}/p/{}", cabinet.machine_id),
        idempotency_key: keys.mac(
            "checkout",
            &format!(
                "{}|{}|{}|{}",
                buyer.nonce, cabinet.machine_id, bundle.credits, bundle.price_minor
            ),
        ),
    };
    let (session_id, url) = stripe.create_checkout(&request).await?;
    // Without the stored session the webhook could not be checked: an error here means
    // the player is not sent to pay.
    store
        .insert_checkout_session(&StoredSession {
            id: session_id.clone(),
            machine_id: cabinet.machine_id.clone(),
            credits: bundle.credits,
            amount_minor: bundle.price_minor,
            currency: cabinet.currency.clone(),
            bundle_label: request.bundle,
            url: url.clone(),
            status: CheckoutStatus::Open,
            created_at: now_db(),
            buyer: Some(buyer.id),
        })
        .await?;
    tracing::info!(machine_id = %cabinet.machine_id, session = %session_id, credits = bundle.credits, amount = bundle.price_minor, "checkout started");
    Ok(url)
}

/// Where a checkout of this cabinet stands; None when no such session was opened for it.
pub async fn stage(
    store: &Store,
    machine_id: &str,
    session_id: &str,
) -> Result<Option<Stage>, StoreError> {
    match store.checkout_session(session_id).await? {
        Some(s) if s.machine_id == machine_id => {}
        _ => return Ok(None),
    }
    let progress = store.checkout_progress(session_id).await?;
    Ok(Some(Stage::of(progress.payment, progress.pulse)))
}
