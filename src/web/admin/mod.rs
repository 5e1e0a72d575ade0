//! The owner's dashboard under `/admin`: server-rendered pages behind a signed-in session.
//!
//! Every page handler takes an [`Admin`] (a signed-in user, or a redirect to the sign-in
//! page); every state-changing form arrives as a [`Csrf`] (its token checked against the
//! session's, else 403 and nothing happens). Owner-only actions call
//! [`Admin::require_owner`].

mod auth;
mod cabinets;
pub mod charts;
mod live;
mod overview;
mod pages;
mod payments;
mod stickers;
pub mod view;
mod wallets;

pub use auth::{
    login, login_form, logout, password, password_form, setup, setup_form, sign_out_everywhere,
};

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::{random_token, Keys, Role};
use crate::error::AppError;
use crate::store::{NewAudit, User};

pub const COOKIE: &str = "cp_session";
/// Signed out after this long without a request…
const IDLE_SECS: i64 = 2 * 3600;
/// …and after this long in any case.
const LIFETIME_SECS: i64 = 12 * 3600;

const UID: &str = "uid";
const EPOCH: &str = "epoch";
const STARTED: &str = "started";
const SEEN: &str = "seen";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";
/// The hidden form field carrying the token (the name Flask-WTF and the seed used).
pub const CSRF_FIELD: &str = "csrf_token";

/// Sessions in an encrypted, signed cookie (nothing kept in memory, so any replica can
/// read them), keyed from the master key.
pub fn sessions(keys: &Keys, secure: bool) -> SessionMiddleware<CookieSessionStore> {
    SessionMiddleware::builder(CookieSessionStore::default(), Key::from(keys.session_key()))
        .cookie_name(COOKIE.to_owned())
        .cookie_secure(secure)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_path("/".to_owned())
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(BrowserSession::default())
        .build()
}

/// The setup page and `/admin`, behind the session cookie (no other path reads or sets it).
pub fn configure(cfg: &mut web::ServiceConfig, keys: &Keys, secure_cookies: bool) {
    cfg.service(
        web::resource("/setup")
            .wrap(sessions(keys, secure_cookies))
            .route(web::get().to(setup_form))
            .route(web::post().to(setup)),
    )
    .service(
        web::scope("/admin")
            .wrap(sessions(keys, secure_cookies))
            .route("", web::get().to(overview::overview))
            .route("/", web::get().to(overview::overview))
            .route("/login", web::get().to(login_form))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/sessions/end", web::post().to(sign_out_everywhere))
            .route("/password", web::get().to(password_form))
            .route("/password", web::post().to(password))
            .route("/live", web::get().to(live::events))
            .route("/cabinets", web::get().to(cabinets::list))
            .route("/cabinets/new", web::get().to(cabinets::new_form))
            .route("/cabinets/new", web::post().to(cabinets::create))
            .route("/cabinets/{id}", web::get().to(cabinets::show))
            .route("/cabinets/{id}/edit", web::get().to(cabinets::edit_form))
            .route("/cabinets/{id}/edit", web::post().to(cabinets::edit))
            .route(
                "/cabinets/{id}/enabled",
                web::post().to(cabinets::set_enabled),
            )
            .route("/cabinets/{id}/rotate", web::post().to(cabinets::rotate))
            .route("/cabinets/{id}/archive", web::post().to(cabinets::archive))
            .route("/cabinets/{id}/credit", web::post().to(cabinets::credit))
            .route("/cabinets/{id}/qr.{format}", web::get().to(stickers::qr))
            .route("/stickers", web::get().to(stickers::sheet))
            .route("/stickers/printed.svg", web::get().to(stickers::printed))
            .route("/payments", web::get().to(payments::list))
            .route("/payments.csv", web::get().to(payments::csv))
            .route("/payments/{id}", web::get().to(payments::show))
            .route("/payments/{id}/refund", web::post().to(payments::refund))
            .route("/payments/{id}/assign", web::post().to(payments::assign))
            .route("/payments/{id}/dismiss", web::post().to(payments::dismiss))
            .route("/review", web::get().to(payments::review))
            .route("/plays", web::get().to(pages::plays))
            .route("/audit", web::get().to(pages::audit))
            .route("/settings", web::get().to(pages::settings))
            .route("/wallets", web::get().to(wallets::list))
            .route("/wallets/packages", web::post().to(wallets::set_packages))
            .route("/wallets/{id}", web::get().to(wallets::show))
            .route("/wallets/{id}/adjust", web::post().to(wallets::adjust))
            .route(
                "/wallets/{id}/topups/{session}/refund",
                web::post().to(wallets::refund_topup),
            )
            .route("/users", web::get().to(pages::users))
            .route("/users", web::post().to(pages::add_user))
            .route("/users/{id}/remove", web::post().to(pages::remove_user)),
    );
}

/// What the layout needs on every dashboard page.
pub struct Nav {
    pub email: String,
    pub role: Role,
    pub csrf: String,
    pub active: &'static str,
    pub flash: Option<String>,
    /// Players' phones cannot reach PUBLIC_URL (it is localhost or a LAN-only name).
    pub local_url: bool,
}

impl Nav {
    pub fn is_owner(&self) -> bool {
        self.role == Role::Owner
    }
}

/// A signed-in dashboard user.
pub struct Admin {
    pub user: User,
    pub ip: Option<String>,
    session: Session,
    state: web::Data<AppState>,
}

impl Admin {
    pub fn require_owner(&self, what: &str) -> Result<(), AppError> {
        match self.user.role {
            Role::Owner => Ok(()),
            Role::Staff => {
                tracing::warn!(user = %self.user.email, action = what, "staff action refused");
                Err(AppError::Forbidden(format!(
                    "Only an owner can {what}. Ask the owner of this installation."
                )))
            }
        }
    }

    /// The layout's data for a page under `active`; takes the flash message, if any.
    pub fn nav(&self, active: &'static str) -> Nav {
        let flash = self.session.remove_as::<String>(FLASH).and_then(Result::ok);
        Nav {
            email: self.user.email.clone(),
            role: self.user.role,
            csrf: csrf_token(&self.session),
            active,
            flash,
            local_url: is_local_url(&self.state.settings.public_url),
        }
    }

    /// A message for the next page (after a redirect).
    pub fn flash(&self, message: impl Into<String>) {
        let _ = self.session.insert(FLASH, message.into());
    }

    /// Records what this user did.
    pub async fn audit(&self, action: &str, subject: Option<&str>, detail: &str) {
        crate::accounts::audit(
            &self.state.store,
            NewAudit {
                actor: &self.user.email,
                ip: self.ip.as_deref(),
                action,
                subject,
                detail,
            },
        )
        .await;
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The user of a live session, or None (and the session cleared) when it is missing,
/// idle too long, too old, or from before a password change.
/// `touch` false for the live view's own requests, which must not keep an unattended
/// dashboard signed in forever.
async fn signed_in(
    state: &AppState,
    session: &Session,
    touch: bool,
) -> Result<Option<User>, AppError> {
    let get = |k: &str| session.get::<i64>(k).ok().flatten();
    let Some(uid) = session.get::<String>(UID).ok().flatten() else {
        return Ok(None);
    };
    let now = now_secs();
    let fresh = matches!((get(STARTED), get(SEEN)), (Some(t0), Some(seen))
        if now - t0 < LIFETIME_SECS && now - seen < IDLE_SECS);
    let user = match fresh {
        true => state.store.user(&uid).await?,
        false => None,
    };
    match user.filter(|u| Some(u.session_epoch) == get(EPOCH)) {
        Some(u) => {
            // Minute resolution: the cookie is not rewritten on every request.
            if touch && get(SEEN).is_some_and(|s| now - s >= 60) {
                let _ = session.insert(SEEN, now);
            }
            Ok(Some(u))
        }
        None => {
            session.purge();
            Ok(None)
        }
    }
}

/// Starts a session for `user`: a new cookie (the old id is not carried over) and a new
/// CSRF token.
pub fn start_session(session: &Session, user: &User) {
    session.renew();
    session.clear();
    let now = now_secs();
    let _ = session.insert(UID, &user.id);
    let _ = session.insert(EPOCH, user.session_epoch);
    let _ = session.insert(STARTED, now);
    let _ = session.insert(SEEN, now);
    let _ = session.insert(CSRF, random_token(32));
}

/// The session's CSRF token, made on first use.
pub fn csrf_token(session: &Session) -> String {
    if let Some(t) = session.get::<String>(CSRF).ok().flatten() {
        return t;
    }
    let t = random_token(32);
    let _ = session.insert(CSRF, &t);
    t
}

/// Phones can reach `url` only if it names a public host.
pub fn is_local_url(url: &str) -> bool {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or_default()),
        None => authority.split(':').next().unwrap_or_default().to_owned(),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".local")
        || host.starts_with("127.")
        || host == "0.0.0.0"
        || host == "[::1]"
        || host.is_empty()
}

fn sign_in_redirect(req: &HttpRequest) -> actix_web::Error {
    let next = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/admin");
    let target = format!(
        "/admin/login?next={}",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    actix_web::error::InternalError::from_response(
        "sign in first",
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, target))
            .finish(),
    )
    .into()
}

impl FromRequest for Admin {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("state configured")
                .clone();
            let session = req.get_session();
            let live =
                req.headers().contains_key("x-coinpulse-live") || req.path() == "/admin/live";
            match signed_in(&state, &session, !live).await? {
                Some(user) => Ok(Admin {
                    user,
                    ip: crate::web::client::ip(&req),
                    session,
                    state,
                }),
                None => Err(sign_in_redirect(&req)),
            }
        })
    }
}

/// A submitted form whose `csrf_token` field matches the session's token; anything else is
/// refused with 403 before the handler runs.
pub struct Csrf<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Csrf<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let body = body.await?;
            let sent = form_urlencoded::parse(&body)
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.into_owned());
            let expected = req.get_session().get::<String>(CSRF).ok().flatten();
            let ok = matches!((&sent, &expected), (Some(s), Some(e))
                if bool::from(s.as_bytes().ct_eq(e.as_bytes())));
            if !ok {
                tracing::warn!(path = %req.path(), peer = ?crate::web::client::ip(&req), token_sent = sent.is_some(),
                    "form refused: missing or wrong CSRF token");
                return Err(AppError::Forbidden(
                    "This form has expired or did not come from this site. Go back, reload the page and try again."
                        .into(),
                )
                .into());
            }
            let form = serde_urlencoded::from_bytes::<T>(&body)
                .map_err(|e| AppError::BadRequest(format!("invalid form: {e}")))?;
            Ok(Csrf(form))
        })
    }
}

/// The page for a database error where a handler answers a page itself.
pub fn db_trouble(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "dashboard: database error");
    super::html::message_page(
        HttpResponse::ServiceUnavailable(),
        "Please try again",
        "The database did not answer just now. Please try again in a moment.",
        None,
    )
}

pub use super::html::see_other;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_are_spotted() {
        for u in [
            "http://localhost:8080",
            "http://127.0.0.1:8080/",
            "http://arcade.local",
            "http://[::1]:8080",
        ] {
            assert!(is_local_url(u), "{u}");
        }
        for u in ["https://pay.example.com", "http://192.168.1.20:8080"] {
            assert!(!is_local_url(u), "{u}");
        }
    }
}
