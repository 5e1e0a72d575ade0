//! Stripe Payment Links for a cabinet (the seed's way to sell a play): one Stripe product
//! and price per cabinet and price, made once and reused.

use crate::domain::{Bundle, Cabinet};
use crate::store::{Store, StoreError};
use crate::stripe::api::{StripeApi, StripeApiError};

#[derive(Debug, thiserror::Error)]
pub enum PaymentLinkError {
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A Payment Link selling `quantity` plays on `cabinet`, at `price_id` when given, else at
/// the cabinet's price (its Stripe price made on first use).
pub async fn create(
    store: &Store,
    stripe: &StripeApi,
    cabinet: &Cabinet,
    quantity: u64,
    price_id: Option<&str>,
) -> Result<String, PaymentLinkError> {
    let price_id = match price_id {
        Some(p) => p.to_owned(),
        None => cabinet_price(store, stripe, cabinet).await?,
    };
    let url = stripe
        .create_payment_link(&price_id, quantity, &cabinet.machine_id)
        .await?;
    tracing::info!(machine_id = %cabinet.machine_id, price_id = %price_id, "payment link created");
    Ok(url)
}

async fn cabinet_price(
    store: &Store,
    stripe: &StripeApi,
    cabinet: &Cabinet,
) -> Result<String, PaymentLinkError> {
    let (machine_id, price_minor, currency) =
        (&cabinet.machine_id, cabinet.price_minor, &cabinet.currency);
    if let Some((_, price)) = store
        .stripe_price(machine_id, price_minor, currency)
        .await?
    {
        return Ok(price);
    }
    let one_play = Bundle {
        credits: 1,
        price_minor,
        label: String::new(),
    };
    let (product, price) = stripe
        .create_price(
            &cabinet.product_name(&one_play),
            machine_id,
            price_minor,
            currency,
        )
        .await?;
    store
        .save_stripe_price(machine_id, price_minor, currency, &product, &price)
        .await?;
    Ok(price)
}
