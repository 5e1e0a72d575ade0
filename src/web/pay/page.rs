//! `GET /p/{machine_id}`: the bundles a cabinet offers, each a one-tap form.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::{csrf_for, load, new_nonce, pay_cookie, phone_wallet, Loaded, Payable};
use crate::domain::{Bundle, Money};
use crate::error::PageError;
use crate::web::{html, AppState};

pub struct BundleView {
    pub index: usize,
    pub title: String,
    pub price: String,
    pub per_play: String,
}

#[derive(Template)]
#[template(path = "pay/page.html")]
struct PayPage {
    machine_id: String,
    name: String,
    game: String,
    location: String,
    bundles: Vec<BundleView>,
    csrf: String,
    nonce: String,
    wallet: Option<WalletOffer>,
}

/// What this phone's wallet can pay here.
pub struct WalletOffer {
    pub balance: String,
    /// Bundles the balance covers: (index, title, price, balance left after).
    pub options: Vec<(usize, String, String, String)>,
}

/// The small line under a bundle: how many plays a label hides, and the price per play.
fn detail(b: &Bundle, currency: &str) -> String {
    let per_play = (b.credits > 1).then(|| {
        format!(
            "{} per play",
            Money::format(b.price_minor / b.credits, currency)
        )
    });
    let plays = (!b.label.is_empty()).then(|| {
        Bundle {
            label: String::new(),
            ..b.clone()
        }
        .title()
    });
    [plays, per_play]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
}

pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let Payable { cabinet, bundles } = match load(&state, &path).await? {
        Loaded::Payable(p) => p,
        Loaded::Unavailable(res) => return Ok(res),
    };
    let (cookie_value, cookie) = pay_cookie(&state, &req);
    let nonce = new_nonce();
    // A wallet that cannot be read just now is not offered; the card still works.
    let wallet = phone_wallet(&state, &req)
        .await
        .ok()
        .flatten()
        .filter(|w| w.currency == cabinet.currency)
        .map(|w| WalletOffer {
            balance: Money::format(w.balance_minor, &w.currency),
            options: bundles
                .iter()
                .enumerate()
                .filter(|(_, b)| b.price_minor <= w.balance_minor)
                .map(|(i, b)| {
                    (
                        i,
                        b.title(),
                        Money::format(b.price_minor, &w.currency),
                        Money::format(w.balance_minor - b.price_minor, &w.currency),
                    )
                })
                .collect(),
        });
    let views = bundles
        .iter()
        .enumerate()
        .map(|(index, b)| BundleView {
            index,
            title: b.title(),
            price: Money::format(b.price_minor, &cabinet.currency),
            per_play: detail(b, &cabinet.currency),
        })
        .collect();
    let page = PayPage {
        csrf: csrf_for(&state, &cookie_value, &cabinet.machine_id, &nonce),
        nonce,
        machine_id: cabinet.machine_id,
        name: cabinet.name,
        game: cabinet.game,
        location: cabinet.location,
        bundles: views,
        wallet,
    };
    let mut res = html::page(StatusCode::OK, &page);
    let _ = res.add_cookie(&cookie);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_detail_names_hidden_plays_and_price_per_play() {
        let plain = Bundle {
            credits: 1,
            price_minor: 100,
            label: String::new(),
        };
        assert_eq!(detail(&plain, "usd"), "");
        let three = Bundle {
            credits: 3,
            price_minor: 250,
            label: "Best value".into(),
        };
        assert_eq!(detail(&three, "usd"), "3 plays · $0.83 per play");
    }
}
