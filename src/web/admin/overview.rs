//! `GET /admin`: takings and plays, every cabinet at a glance, what needs review, two
//! charts and — until everything is in place — the setup checklist.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{Datelike, Duration, Timelike, Utc};

use super::view::{self, Link, PaymentLine};
use super::{charts, Admin, Nav};
use crate::domain::{db_time, Money};
use crate::error::AppError;
use crate::store::{PaymentQuery, StatusView};
use crate::web::{html, AppState};

pub struct Period {
    pub label: &'static str,
    pub takings: String,
    pub plays: i64,
}

pub struct CabinetLine {
    pub machine_id: String,
    pub name: String,
    pub game: String,
    pub link: Link,
    pub last_seen: String,
    pub today: String,
    pub last_game: String,
    pub waiting: i64,
    pub enabled: bool,
}

/// One item of the setup checklist.
pub struct Check {
    pub done: bool,
    pub title: String,
    /// What to do while it is not done.
    pub how: String,
    pub code: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    nav: Nav,
    periods: Vec<Period>,
    cabinets: Vec<CabinetLine>,
    review: Vec<PaymentLine>,
    recent: Vec<PaymentLine>,
    revenue_chart: String,
    plays_chart: String,
    checklist: Vec<Check>,
    checklist_done: bool,
}

pub async fn checklist(state: &AppState) -> Result<Vec<Check>, AppError> {
    let s = &state.settings;
    let m = state.store.milestones().await?;
    let sticker = state.store.meta("first_sticker_at").await?;
    let key = s.stripe_secret_key.as_ref().map(|k| k.expose().to_owned());
    let mode = match key.as_deref() {
        Some(k) if k.starts_with("sk_live_") || k.starts_with("rk_live_") => "live mode",
        Some(k) if k.starts_with("sk_test_") || k.starts_with("rk_test_") => "test mode",
        Some(_) => "unrecognised key prefix",
        None => "",
    };
    let webhook_url = format!("{}/webhooks/stripe", s.public_url);
    Ok(vec![
        Check {
            done: !super::is_local_url(&s.public_url),
            title: format!("Public URL: {}", s.public_url),
            how: "Players' phones and Stripe must reach this server. Set PUBLIC_URL to its public https address and restart.".into(),
            code: Some("PUBLIC_URL=https://pay.your-arcade.com".into()),
        },
        Check {
            done: key.is_some(),
            title: match key {
                Some(_) => format!("Stripe API key set ({mode})"),
                None => "Stripe API key".into(),
            },
            how: "Copy the secret key from Stripe's dashboard (Developers → API keys); sk_test_… while you try things out.".into(),
            code: Some("STRIPE_SECRET_KEY=sk_test_…".into()),
        },
        Check {
            done: s.stripe_webhook_secret.is_some(),
            title: "Stripe webhook secret".into(),
            how: format!("Add a webhook endpoint in Stripe for {webhook_url} (events checkout.session.completed, checkout.session.async_payment_succeeded, checkout.session.async_payment_failed, checkout.session.expired, charge.refunded) and set its signing secret."),
            code: Some("STRIPE_WEBHOOK_SECRET=whsec_…".into()),
        },
        Check {
            done: m.webhook_received,
            title: "First webhook received".into(),
            how: "Forward Stripe's test events with the Stripe CLI, or send a signed test payment from this machine:".into(),
            code: Some(format!(
                "stripe listen --forward-to {webhook_url}\ncoinpulse webhook-test --machine-id cab-1 --amount 1.00"
            )),
        },
        Check {
            done: m.cabinets > 0,
            title: "First cabinet registered".into(),
            how: "Register a cabinet with its price and bundles.".into(),
            code: None,
        },
        Check {
            done: m.cabinets_seen > 0,
            title: "First cabinet connected".into(),
            how: "Put the connection details from the cabinet's page into the cabinet (or try `coinpulse cabinet-sim`).".into(),
            code: None,
        },
        Check {
            done: sticker.is_some(),
            title: "First sticker printed".into(),
            how: "Print QR stickers from the Stickers page and put them on the cabinets.".into(),
            code: None,
        },
    ])
}

pub async fn overview(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, AppError> {
    let now = Utc::now();
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let store = &state.store;
    let all = store.cabinets().await?;
    let default_currency = all.first().map(|c| c.currency.clone());
    let home_currency = default_currency.clone().unwrap_or_else(|| "usd".into());
    let mut periods = Vec::new();
    for (label, since) in [
        ("Today", today),
        ("7 days", today - Duration::days(6)),
        ("30 days", today - Duration::days(29)),
    ] {
        let since = db_time(since);
        periods.push(Period {
            label,
            takings: view::takings(&store.takings_since(&since).await?, &home_currency),
            plays: store.plays_since(&since).await?,
        });
    }

    let activity = store.cabinet_activity(&db_time(today)).await?;
    let mut cabinets = Vec::new();
    for c in all.into_iter().filter(|c| c.archived_at.is_none()) {
        let a = activity.iter().find(|a| a.machine_id == c.machine_id);
        cabinets.push(CabinetLine {
            link: view::link(&state, &c).await,
            last_seen: view::ago(c.last_seen_at.as_deref(), now),
            today: Money::format(a.map_or(0, |a| a.revenue_today), &c.currency),
            last_game: view::ago(a.and_then(|a| a.last_play_at.as_deref()), now),
            waiting: a.map_or(0, |a| a.waiting),
            machine_id: c.machine_id,
            name: c.name,
            game: c.game,
            enabled: c.enabled,
        });
    }

    let review = store
        .find_payments(
            &PaymentQuery {
                status: Some(StatusView::Review),
                ..Default::default()
            },
            20,
            0,
        )
        .await?;
    let recent = store.find_payments(&PaymentQuery::default(), 8, 0).await?;

    // Revenue per day for 30 days, in the currency that took the most.
    let since = today - Duration::days(29);
    let days = store.takings_by_day(&db_time(since)).await?;
    let currency = {
        let mut totals: Vec<(String, i64)> = Vec::new();
        for d in &days {
            match totals.iter_mut().find(|t| t.0 == d.currency) {
                Some(t) => t.1 += d.value,
                None => totals.push((d.currency.clone(), d.value)),
            }
        }
        totals
            .into_iter()
            .max_by_key(|t| t.1)
            .map(|t| t.0)
            .or(default_currency)
            .unwrap_or_else(|| "usd".into())
    };
    let points: Vec<(String, i64)> = (0..30)
        .map(|i| {
            let day = (since + Duration::days(i)).format("%Y-%m-%d").to_string();
            let v = days
                .iter()
                .filter(|d| d.bucket == day && d.currency == currency)
                .map(|d| d.value)
                .sum();
            (day[5..].to_owned(), v)
        })
        .collect();
    let revenue_chart = charts::bars(
        "Revenue per day, last 30 days",
        &points,
        |v| Money::format(v, &currency),
        7,
    );

    let mut week = [[0i64; 24]; 7];
    for b in store.plays_by_hour(&db_time(since)).await? {
        if let Some(t) = view::parse_time(&format!("{}:00:00Z", b.bucket)) {
            week[t.weekday().num_days_from_monday() as usize][t.hour() as usize] += b.value;
        }
    }
    let plays_chart = charts::week_heatmap("Plays by hour of the week, last 30 days (UTC)", &week);

    let checklist = checklist(&state).await?;
    let page = OverviewPage {
        nav: admin.nav("overview"),
        checklist_done: checklist.iter().all(|c| c.done),
        periods,
        cabinets,
        review: view::lines(&review),
        recent: view::lines(&recent),
        revenue_chart,
        plays_chart,
        checklist,
    };
    Ok(html::page(StatusCode::OK, &page))
}
