//! `POST /p/{machine_id}/wallet`: "Play now" — pays a bundle from the phone's wallet. The
//! form's nonce is the single-use token: a double tap spends once and lands on the same
//! thanks page.

use super::{chosen, phone_wallet, BundleForm};
use crate::error::{AppError, PageError};
use crate::wallets::{Spend, Spent};
use crate::web::{html, AppState};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn play_from_wallet(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<BundleForm>,
) -> Result<HttpResponse, PageError> {
    let back = || Some(format!("/p/{}", path.as_str()));
    let (_, cabinet, bundle) = match chosen(&state, &req, &path, &form).await? {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    let wallet = phone_wallet(&state, &req)
        .await
        .map_err(|e| AppError::from(e).page("Please try again", back()))?;
    let Some(wallet) = wallet else {
        return Ok(html::see_other(&format!("/w?from={}", cabinet.machine_id)));
    };
    if wallet.currency != cabinet.currency {
        return Err(AppError::Conflict(format!(
            "Your balance is in {}; this machine takes {}. Please pay by card.",
            wallet.currency.to_ascii_uppercase(),
            cabinet.currency.to_ascii_uppercase()
        ))
        .page("Different currency", back()));
    }
    let spent = state
        .writer
        .spend(Spend {
            wallet_id: wallet.id.clone(),
            machine_id: cabinet.machine_id.clone(),
            credits: bundle.credits,
            price_minor: bundle.price_minor,
            token: form.nonce.clone(),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "wallet play: writer failed");
            AppError::Unavailable(
                "Something went wrong on our side. Nothing was taken from your balance. Please try again.".into(),
            )
            .page("Please try again", back())
        })?;
    let thanks = |pulse: &str| {
        html::see_other(&format!(
            "/p/{}/thanks?pulse={}",
            cabinet.machine_id,
            form_urlencoded::byte_serialize(pulse.as_bytes()).collect::<String>()
        ))
    };
    Ok(match spent {
        Spent::Sent(p) => thanks(&p.id),
        Spent::Again(pulse) => thanks(&pulse),
        Spent::Insufficient => html::message_page(
            HttpResponse::PaymentRequired(),
            "Not enough on your balance",
            "Nothing was taken. Top up your wallet, or pay by card on the machine's page.",
            Some(&format!("/w?from={}", cabinet.machine_id)),
        ),
        Spent::Unavailable => html::message(
            &format!("{} is unavailable", cabinet.name),
            crate::domain::cabinet::DISABLED,
        ),
    })
}
