//! `POST /p/{machine_id}/checkout`: checks the form, then hands the player to Stripe.

use super::{chosen, BundleForm};
use crate::checkout::{self, Buyer, CheckoutError};
use crate::error::{AppError, PageError};
use crate::web::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<BundleForm>,
) -> Result<HttpResponse, PageError> {
    let back = || Some(format!("/p/{}", path.as_str()));
    let (cookie, cabinet, bundle) = match chosen(&state, &req, &path, &form).await? {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    let buyer = Buyer {
        id: state.keys.mac("pay-buyer", &cookie),
        nonce: &form.nonce,
    };
    let started = checkout::start(
        &state.store,
        &state.stripe,
        &state.keys,
        &state.settings.public_url,
        &cabinet,
        &bundle,
        buyer,
    )
    .await;
    match started {
        Ok(url) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .finish()),
        Err(e) => {
            tracing::error!(machine_id = %cabinet.machine_id, error = %e, "checkout could not start");
            let error = match e {
                CheckoutError::Stripe(_) => AppError::BadGateway(
                    "We couldn't reach the payment service. You have not been charged. Please try again.".into(),
                ),
                CheckoutError::Store(_) => AppError::Unavailable(
                    "Something went wrong on our side. You have not been charged. Please try again.".into(),
                ),
            };
            Err(error.page("Payment couldn't start", back()))
        }
    }
}
