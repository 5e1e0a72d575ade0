//! The route table: every URL coinpulse answers is listed here.

mod admin;
mod api;
pub mod assets;
pub mod client;
mod emqx;
mod gameover;
mod home;
pub mod html;
mod limits;
mod pay;
mod status;
mod wallet;
mod webhooks;

pub use limits::{Limits, Refusal};

use std::sync::Arc;

use actix_web::web;
use paho_mqtt as paho;

use crate::config::Settings;
use crate::domain::Keys;
use crate::mqtt::{MqttStats, Topics};
use crate::store::Store;
use crate::writer::Writer;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub writer: Writer,
    pub settings: Arc<Settings>,
    pub keys: Keys,
    pub stats: Arc<MqttStats>,
    pub mqtt: paho::AsyncClient,
    pub topics: Topics,
    /// `embedded` or the external broker's URL, for cabinet installers.
    pub broker: String,
    /// The embedded broker's port, when it runs.
    pub mqtt_port: Option<u16>,
    pub mqtt_tls_port: Option<u16>,
    /// The embedded broker's live view of cabinet connections; None with MQTT_URL.
    pub presence: Option<crate::mqtt::broker::Presence>,
    pub stripe: crate::stripe::api::StripeApi,
    pub qr: crate::qr::QrCache,
    pub limits: Arc<limits::Limits>,
    pub mailer: crate::mail::Mailer,
}

/// Every response carries these (a handler may set its own instead): no inline script
/// can run, no page can be framed, no referrer leaks across sites.
pub fn security_headers(https: bool) -> actix_web::middleware::DefaultHeaders {
    let headers = actix_web::middleware::DefaultHeaders::new();
    // Behind https, browsers are told to never try plain http again.
    let headers = match https {
        true => headers.add(("Strict-Transport-Security", "max-age=31536000")),
        false => headers,
    };
    headers
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
             frame-ancestors 'none'",
        ))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=(), usb=(), payment=(), interest-cohort=()",
        ))
}

/// Middleware: counts every request by its route pattern (never the raw path, which
/// carries ids and tokens), method and status.
pub async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    crate::metrics::http_request(&route, &method, res.status().as_u16());
    Ok(res)
}

pub fn configure(cfg: &mut web::ServiceConfig, keys: &Keys, public_url: &str) {
    admin::configure(cfg, keys, public_url.starts_with("https://"));
    cfg.app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(crate::error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(crate::error::query_error))
    .route("/", web::get().to(home::index))
    .route("/static/{file}", web::get().to(assets::serve))
    .route("/status", web::get().to(status::status))
    .route("/ready", web::get().to(status::ready))
    .route("/metrics", web::get().to(status::metrics))
    .route("/mqtt/emqx/auth", web::post().to(emqx::authenticate))
    .route("/mqtt/emqx/acl", web::post().to(emqx::authorize))
    .route("/webhooks/stripe", web::post().to(webhooks::stripe))
    // The seed's webhook path, so Stripe endpoints configured for it keep working.
    .route("/addCredit", web::post().to(webhooks::stripe))
    .route("/gameover", web::post().to(gameover::gameover))
    .route(
        "/create-payment-link",
        web::post().to(api::create_payment_link),
    )
    // The player's pages: the QR sticker points at /p/{machine_id}.
    .route("/p/{machine_id}", web::get().to(pay::page))
    .route("/p/{machine_id}/checkout", web::post().to(pay::checkout))
    .route(
        "/p/{machine_id}/wallet",
        web::post().to(pay::play_from_wallet),
    )
    .route("/p/{machine_id}/thanks", web::get().to(pay::thanks))
    // The player's wallet.
    .route("/w", web::get().to(wallet::page))
    .route("/w/topup", web::post().to(wallet::topup))
    .route("/w/email", web::post().to(wallet::set_email))
    .route("/w/signin", web::post().to(wallet::send_signin))
    .route("/w/signin/{token}", web::get().to(wallet::signin))
    .route("/w/signin/{token}", web::post().to(wallet::use_link))
    .route("/p/{machine_id}/status", web::get().to(pay::status))
    .service(
        web::scope("/api/v1")
            .route("/cabinets", web::post().to(api::create_cabinet))
            .route("/cabinets", web::get().to(api::list_cabinets))
            .route("/cabinets/{machine_id}", web::get().to(api::get_cabinet))
            .route(
                "/cabinets/{machine_id}",
                web::patch().to(api::update_cabinet),
            )
            .route(
                "/cabinets/{machine_id}/credits",
                web::post().to(api::grant_credits),
            )
            .route(
                "/cabinets/{machine_id}/bundles",
                web::get().to(api::get_bundles),
            )
            .route(
                "/cabinets/{machine_id}/bundles",
                web::put().to(api::put_bundles),
            )
            .route("/cabinets/{machine_id}/qr.{format}", web::get().to(api::qr))
            .route("/payments", web::get().to(api::list_payments))
            .route("/payments/{id}", web::get().to(api::get_payment))
            .route("/plays", web::get().to(api::list_plays))
            .route("/pulses", web::get().to(api::list_pulses))
            .route(
                "/topup-packages/{currency}",
                web::get().to(api::get_packages),
            )
            .route(
                "/topup-packages/{currency}",
                web::put().to(api::put_packages),
            )
            .default_service(web::to(api::not_found)),
    );
}
