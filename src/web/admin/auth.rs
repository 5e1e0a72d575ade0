//! First-run setup, signing in and out, and changing one's password.

use actix_session::SessionExt;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{csrf_token, see_other, start_session, Admin, Csrf, Nav};
use crate::accounts::{self, AccountError, SignIn};
use crate::error::AppError;
use crate::store::NewAudit;
use crate::web::{html, AppState};

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage<'a> {
    csrf: String,
    token: &'a str,
    email: &'a str,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn check_token(state: &AppState, token: &str) -> Result<(), HttpResponse> {
    if state.store.count_users().await.unwrap_or(1) > 0 {
        return Err(html::message_page(
            HttpResponse::Gone(),
            "Setup is already done",
            "This installation has its owner account. Sign in at /admin/login.",
            None,
        ));
    }
    match accounts::setup_token_valid(&state.store, token).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!("setup page opened with a wrong or used token");
            Err(html::message_page(
                HttpResponse::Forbidden(),
                "This setup link is not valid",
                "Use the setup link the server printed in its log when it started (it changes at each start), or create the owner with `coinpulse user add --email you@example.com --role owner`.",
                None,
            ))
        }
        Err(e) => Err(super::db_trouble(e)),
    }
}

/// `GET /setup?token=…`: the owner account form, while no user exists.
pub async fn setup_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<TokenQuery>,
) -> HttpResponse {
    if let Err(page) = check_token(&state, &q.token).await {
        return page;
    }
    let page = SetupPage {
        csrf: csrf_token(&req.get_session()),
        token: &q.token,
        email: "",
        error: None,
    };
    html::page(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /setup`: creates the owner and signs them in; the token is used up.
pub async fn setup(
    req: HttpRequest,
    state: web::Data<AppState>,
    Csrf(f): Csrf<SetupForm>,
) -> HttpResponse {
    if let Err(page) = check_token(&state, &f.token).await {
        return page;
    }
    let session = req.get_session();
    let again = |error: String| {
        let page = SetupPage {
            csrf: csrf_token(&session),
            token: &f.token,
            email: &f.email,
            error: Some(error),
        };
        html::page(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    match accounts::complete_setup(&state.store, &f.token, &f.email, &f.password, &f.confirm).await
    {
        Ok(Some(user)) => {
            tracing::info!(user = %user.email, "owner account created; setup complete");
            accounts::audit(
                &state.store,
                NewAudit {
                    actor: &user.email,
                    ip: crate::web::client::ip(&req).as_deref(),
                    action: "user.setup",
                    subject: Some(&user.email),
                    detail: "owner account created with the setup link",
                },
            )
            .await;
            start_session(&session, &user);
            see_other("/admin")
        }
        Ok(None) => html::message_page(
            HttpResponse::Forbidden(),
            "This setup link is not valid",
            "It was used already. Sign in at /admin/login.",
            None,
        ),
        Err(AccountError::Store(e)) => super::db_trouble(e),
        Err(e) => again(e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    csrf: String,
    next: &'a str,
    email: &'a str,
    error: Option<String>,
    no_users: bool,
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only a path on this site, so a crafted link cannot send someone elsewhere after login.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/admin") && !next.starts_with("//") && !next.contains("://") {
        next
    } else {
        "/admin"
    }
}

pub async fn login_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<NextQuery>,
) -> HttpResponse {
    let page = LoginPage {
        csrf: csrf_token(&req.get_session()),
        next: safe_next(&q.next),
        email: "",
        error: None,
        no_users: state.store.count_users().await.unwrap_or(0) == 0,
    };
    html::page(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// "in 3 minutes" (rounded up; never "in 0 minutes").
fn minutes(wait: std::time::Duration) -> String {
    let m = wait.as_secs().div_ceil(60).max(1);
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Csrf(f): Csrf<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let session = req.get_session();
    let ip = crate::web::client::ip(&req);
    let email = f.email.trim().to_lowercase();
    let audit = |action: &'static str, detail: String| {
        let store = state.store.clone();
        let email = email.clone();
        let ip = ip.clone();
        async move {
            accounts::audit(
                &store,
                NewAudit {
                    actor: &email,
                    ip: ip.as_deref(),
                    action,
                    subject: Some(&email),
                    detail: &detail,
                },
            )
            .await;
        }
    };
    let again = |status: StatusCode, error: String, retry_after: Option<u64>| {
        let page = LoginPage {
            csrf: csrf_token(&session),
            next: safe_next(&f.next),
            email: &f.email,
            error: Some(error),
            no_users: false,
        };
        let mut res = HttpResponse::build(status);
        if let Some(secs) = retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        html::page_headers(&mut res).body(html::render(&page))
    };
    match accounts::sign_in(&state.store, &email, &f.password, ip.as_deref())
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?
    {
        SignIn::Ok(user) => {
            tracing::info!(user = %user.email, peer = ?ip, "signed in");
            audit("login", String::new()).await;
            start_session(&session, &user);
            Ok(see_other(safe_next(&f.next)))
        }
        SignIn::WrongCredentials => {
            tracing::warn!(email = %email, peer = ?ip, "sign-in failed");
            audit("login.failed", "wrong email or password".into()).await;
            Ok(again(
                StatusCode::UNAUTHORIZED,
                "Wrong email or password.".into(),
                None,
            ))
        }
        SignIn::Throttled(wait) => {
            tracing::warn!(email = %email, peer = ?ip, wait_secs = wait.as_secs(), "sign-in throttled");
            audit("login.throttled", format!("{}s left", wait.as_secs())).await;
            Ok(again(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many attempts. Try again in {}.", minutes(wait)),
                Some(wait.as_secs().max(1)),
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn logout(req: HttpRequest, admin: Admin, _f: Csrf<Empty>) -> HttpResponse {
    admin.audit("logout", None, "").await;
    req.get_session().purge();
    see_other("/admin/login")
}

/// Ends every session of this user, on every device (a lost phone, a shared computer).
pub async fn sign_out_everywhere(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
    _f: Csrf<Empty>,
) -> Result<HttpResponse, AppError> {
    state.store.end_sessions(&admin.user.id).await?;
    admin
        .audit("user.sign_out_everywhere", Some(&admin.user.email), "")
        .await;
    req.get_session().purge();
    Ok(see_other("/admin/login"))
}

#[derive(Template)]
#[template(path = "admin/password.html")]
struct PasswordPage {
    nav: Nav,
    error: Option<String>,
}

pub async fn password_form(admin: Admin) -> HttpResponse {
    html::page(
        StatusCode::OK,
        &PasswordPage {
            nav: admin.nav("password"),
            error: None,
        },
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// Changes the password; every session of the user ends, this one starts afresh.
pub async fn password(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
    Csrf(f): Csrf<PasswordForm>,
) -> Result<HttpResponse, AppError> {
    let again = |error: String| {
        html::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &PasswordPage {
                nav: admin.nav("password"),
                error: Some(error),
            },
        )
    };
    if accounts::verify_password(&f.current, Some(&admin.user.password_hash))
        .await
        .is_none()
    {
        return Ok(again("Your current password is not right.".into()));
    }
    match accounts::set_password(&state.store, &admin.user, &f.password, &f.confirm).await {
        Ok(()) => {}
        Err(AccountError::Store(e)) => return Err(e.into()),
        Err(e) => return Ok(again(e.to_string())),
    }
    admin
        .audit(
            "user.password",
            Some(&admin.user.email),
            "password changed; other sessions ended",
        )
        .await;
    let user = state
        .store
        .user(&admin.user.id)
        .await?
        .ok_or_else(|| AppError::NotFound("user removed".into()))?;
    start_session(&req.get_session(), &user);
    admin.flash("Password changed. Other devices were signed out.");
    Ok(see_other("/admin"))
}
