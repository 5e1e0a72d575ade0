//! Wallets for the owner: who holds what (the outstanding total is the owner's liability),
//! what wallets saved in card fees, top-up packages, a wallet's ledger, a manual adjustment
//! with a reason, and refunding the unspent part of a top-up.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::view::when;
use super::{see_other, Admin, Csrf, Nav};
use crate::domain::wallet::{
    card_fee, default_packages, parse_package, validate_packages, TopupPackage, WalletLimits,
};
use crate::domain::{parse_amount, Currency, LedgerKind, Money};
use crate::error::AppError;
use crate::store::{LedgerRow, Topup, Wallet};
use crate::web::{html, AppState};
use crate::writer::RefundStep;

pub struct Totals {
    pub currency: String,
    pub outstanding: String,
    pub plays: i64,
    pub played: String,
    pub topups: i64,
    pub topped_up: String,
    /// What the wallet plays would have cost as card payments, and what the top-ups did.
    pub fees_avoided: String,
    pub fees_paid: String,
    pub saved: String,
}

#[derive(Template)]
#[template(path = "admin/wallets.html")]
struct ListPage {
    nav: Nav,
    totals: Vec<Totals>,
    wallets: Vec<(Wallet, String)>,
    q: String,
    currency: String,
    /// The top-up settings form as stored, or as typed when it was refused.
    form: PackagesForm,
    packages_error: Option<String>,
    fee: String,
    reminder_days: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    q: String,
}

fn basis_points(state: &AppState) -> i64 {
    (state.settings.card_fee_percent * 100.0).round() as i64
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    q: &str,
    typed: Option<PackagesForm>,
    packages_error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let bp = basis_points(state);
    let fixed = state.settings.card_fee_fixed;
    let mut avoided: BTreeMap<String, i64> = BTreeMap::new();
    for (currency, amount) in state.store.wallet_play_amounts().await? {
        *avoided.entry(currency).or_default() += card_fee(amount, bp, fixed);
    }
    let totals = state
        .store
        .wallet_totals()
        .await?
        .into_iter()
        .map(|t| {
            let fees_avoided = avoided.get(&t.currency).copied().unwrap_or(0);
            // Top-up fees: each top-up a card payment of its own.
            let fees_paid = card_fee(t.topped_up_minor, bp, 0) + t.topups * fixed;
            let m = |v: i64| Money::format(v, &t.currency);
            Totals {
                outstanding: m(t.outstanding_minor),
                plays: t.plays,
                played: m(t.played_minor),
                topups: t.topups,
                topped_up: m(t.topped_up_minor),
                fees_avoided: m(fees_avoided),
                fees_paid: m(fees_paid),
                saved: m(fees_avoided - fees_paid),
                currency: t.currency,
            }
        })
        .collect();
    let search = Some(q.trim()).filter(|s| !s.is_empty());
    let wallets = state
        .store
        .find_wallets(search, 100, 0)
        .await?
        .into_iter()
        .map(|w| {
            let balance = Money::format(w.balance_minor, &w.currency);
            (w, balance)
        })
        .collect();
    let currency = state
        .store
        .cabinets()
        .await?
        .first()
        .map(|c| c.currency.clone())
        .unwrap_or_else(|| "usd".into());
    let cur = Currency::parse(&currency).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let form = match typed {
        Some(f) => f,
        None => stored_form(state, &cur).await?,
    };
    let status = if packages_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = ListPage {
        nav: admin.nav("wallets"),
        totals,
        wallets,
        q: q.to_owned(),
        currency,
        form,
        packages_error,
        reminder_days: crate::domain::wallet::EXPIRY_REMINDER_DAYS,
        fee: format!(
            "{}% + {}",
            state.settings.card_fee_percent, state.settings.card_fee_fixed
        ),
    };
    Ok(html::page(status, &page))
}

pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    list_page(&state, &admin, &q.q, None, None).await
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackagesForm {
    currency: String,
    /// One package per line, `pay:get[:label]`.
    packages: String,
    /// The limits and expiry: a field left out of the form keeps its stored value.
    min_topup: Option<String>,
    max_topup: Option<String>,
    /// Blank: no limit.
    max_balance: Option<String>,
    /// Blank or 0: balances never expire.
    expiry_months: Option<String>,
}

/// The settings form filled from what is stored (or the defaults).
async fn stored_form(state: &AppState, cur: &Currency) -> Result<PackagesForm, AppError> {
    let stored = state.store.topup_packages(cur.as_str()).await?;
    let list = if stored.is_empty() {
        default_packages(cur)
    } else {
        stored
    };
    let packages = list
        .iter()
        .map(|p| {
            let mut line = format!("{}:{}", cur.plain(p.pay_minor), cur.plain(p.credit_minor));
            if !p.label.is_empty() {
                line.push(':');
                line.push_str(&p.label);
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n");
    let limits = state
        .store
        .wallet_limits(cur.as_str())
        .await?
        .unwrap_or_else(|| WalletLimits::default_for(cur));
    Ok(PackagesForm {
        currency: cur.as_str().to_owned(),
        packages,
        min_topup: Some(cur.plain(limits.min_topup_minor)),
        max_topup: Some(cur.plain(limits.max_topup_minor)),
        max_balance: Some(
            limits
                .max_balance_minor
                .map(|m| cur.plain(m))
                .unwrap_or_default(),
        ),
        expiry_months: Some(
            crate::wallets::expiry_months(&state.store)
                .await?
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
    })
}

impl PackagesForm {
    /// Fills the fields the form left out from what is stored.
    fn or(mut self, stored: PackagesForm) -> Self {
        self.min_topup = self.min_topup.or(stored.min_topup);
        self.max_topup = self.max_topup.or(stored.max_topup);
        self.max_balance = self.max_balance.or(stored.max_balance);
        self.expiry_months = self.expiry_months.or(stored.expiry_months);
        self
    }

    fn field(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or("").trim()
    }
}

/// The typed settings, checked: packages, limits and the expiry months.
fn parse_settings(
    f: &PackagesForm,
    currency: &Currency,
) -> Result<(Vec<TopupPackage>, WalletLimits, Option<u32>), String> {
    let amount =
        |label: &str, text: &str| parse_amount(text, currency).map_err(|e| format!("{label}: {e}"));
    let field = PackagesForm::field;
    let limits = WalletLimits {
        min_topup_minor: amount("Smallest top-up", field(&f.min_topup))?,
        max_topup_minor: amount("Largest top-up", field(&f.max_topup))?,
        max_balance_minor: match field(&f.max_balance) {
            "" => None,
            t => Some(amount("Balance limit", t)?),
        },
    };
    limits.validate(currency).map_err(|e| e.to_string())?;
    let expiry = match field(&f.expiry_months) {
        "" | "0" => None,
        t => match t.parse::<u32>() {
            Ok(m @ 1..=120) => Some(m),
            _ => return Err("Expiry: a number of months from 1 to 120, or 0 for never".into()),
        },
    };
    let packages = f
        .packages
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| parse_package(l, currency))
        .collect::<Result<Vec<_>, String>>()?;
    validate_packages(&packages, currency, &limits).map_err(|e| e.to_string())?;
    Ok((packages, limits, expiry))
}

pub async fn set_packages(
    state: web::Data<AppState>,
    admin: Admin,
    Csrf(f): Csrf<PackagesForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("change top-up packages")?;
    let currency =
        Currency::parse(&f.currency).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    let f = f.or(stored_form(&state, &currency).await?);
    let (packages, limits, expiry) = match parse_settings(&f, &currency) {
        Ok(parsed) => parsed,
        Err(e) => return list_page(&state, &admin, "", Some(f), Some(e)).await,
    };
    state
        .store
        .set_topup_packages(currency.as_str(), &packages)
        .await?;
    state
        .store
        .set_wallet_limits(currency.as_str(), &limits)
        .await?;
    state
        .store
        .set_meta(
            crate::wallets::EXPIRY_SETTING,
            &expiry.unwrap_or(0).to_string(),
        )
        .await?;
    admin
        .audit(
            "wallet.packages",
            Some(currency.as_str()),
            &format!(
                "{}; top-ups {}–{}, balance limit {}, expiry {}",
                f.packages.lines().collect::<Vec<_>>().join(", "),
                Money::format(limits.min_topup_minor, currency.as_str()),
                Money::format(limits.max_topup_minor, currency.as_str()),
                limits
                    .max_balance_minor
                    .map_or("none".into(), |m| Money::format(m, currency.as_str())),
                expiry.map_or("never".into(), |m| format!("after {m} months")),
            ),
        )
        .await;
    admin.flash("Top-up settings saved.");
    Ok(see_other("/admin/wallets"))
}

pub struct LedgerLine {
    pub when: String,
    pub kind: LedgerKind,
    pub amount: String,
    pub reason: String,
    pub reference: String,
}

pub struct TopupLine {
    pub session: String,
    pub when: String,
    pub paid: String,
    pub credited: String,
    pub status: String,
    pub refunded: String,
    /// How much of it can still be refunded: what it paid, not beyond the balance.
    pub refundable: Option<String>,
    pub note: String,
}

#[derive(Template)]
#[template(path = "admin/wallet.html")]
struct WalletPage {
    nav: Nav,
    w: Wallet,
    balance: String,
    ledger: Vec<LedgerLine>,
    topups: Vec<TopupLine>,
}

/// What of a top-up can be refunded now: what it paid and is not refunded yet, no more
/// than the balance still covers with the bonus that goes back with it.
fn refundable(t: &Topup, balance_minor: i64) -> i64 {
    let covered = balance_minor * t.pay_minor / t.credit_minor.max(1);
    (t.pay_minor - t.refunded_minor).min(covered).max(0)
}

fn ledger_lines(rows: Vec<LedgerRow>, currency: &str) -> Vec<LedgerLine> {
    rows.into_iter()
        .map(|r| LedgerLine {
            when: when(&r.created_at),
            kind: r.kind,
            amount: format!(
                "{}{}",
                if r.amount_minor >= 0 { "+" } else { "−" },
                Money::format(r.amount_minor.abs(), currency)
            ),
            reason: r.reason,
            reference: r.reference,
        })
        .collect()
}

async fn wallet(state: &AppState, id: &str) -> Result<Wallet, AppError> {
    state
        .store
        .wallet(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no wallet {id:?}")))
}

pub async fn show(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let w = wallet(&state, &path).await?;
    let ledger = ledger_lines(state.store.ledger(&w.id, 500).await?, &w.currency);
    let topups = state
        .store
        .topups(&w.id)
        .await?
        .into_iter()
        .map(|t: Topup| {
            let left = refundable(&t, w.balance_minor);
            let m = |v: i64| Money::format(v, &t.currency);
            TopupLine {
                refundable: (t.status == "paid" && left > 0 && t.payment_intent_id.is_some()).then(
                    || {
                        Currency::parse(&t.currency)
                            .map(|c| c.plain(left))
                            .unwrap_or_default()
                    },
                ),
                session: t.checkout_session_id,
                when: when(&t.created_at),
                paid: m(t.pay_minor),
                credited: m(t.credit_minor),
                status: t.status,
                refunded: m(t.refunded_minor),
                note: t.note.unwrap_or_default(),
            }
        })
        .collect();
    let page = WalletPage {
        nav: admin.nav("wallets"),
        balance: Money::format(w.balance_minor, &w.currency),
        ledger,
        topups,
        w,
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct AdjustForm {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

/// An owner's correction, with a reason; audit-logged.
pub async fn adjust(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<AdjustForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("adjust wallet balances")?;
    let w = wallet(&state, &path).await?;
    let back = format!("/admin/wallets/{}", w.id);
    let currency =
        Currency::parse(&w.currency).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let reason = f.reason.trim();
    // A typo of a few zeros must not become money: no more than the largest top-up.
    let most = state
        .store
        .wallet_limits(currency.as_str())
        .await?
        .unwrap_or_else(|| WalletLimits::default_for(&currency))
        .max_topup_minor;
    let amount = match parse_amount(&f.amount, &currency) {
        Ok(a) if a <= 0 || a > most => {
            admin.flash(format!(
                "Not adjusted: the amount must be more than zero and at most {} (the largest top-up).",
                Money::format(most, &w.currency)
            ));
            return Ok(see_other(&back));
        }
        Ok(_) if reason.is_empty() || reason.chars().count() > 200 => {
            admin.flash("Not adjusted: say why in the reason (up to 200 characters).");
            return Ok(see_other(&back));
        }
        Ok(a) => a,
        Err(e) => {
            admin.flash(format!("Not adjusted: {e}."));
            return Ok(see_other(&back));
        }
    };
    let signed = if f.direction == "take" {
        -amount
    } else {
        amount
    };
    let reason = format!("{reason} (by {})", admin.user.email);
    if state.writer.adjust_wallet(&w.id, signed, &reason).await? {
        admin
            .audit(
                "wallet.adjust",
                Some(&w.id),
                &format!(
                    "{} · {}",
                    Money::format(signed, &w.currency),
                    f.reason.trim()
                ),
            )
            .await;
        admin.flash(format!(
            "Balance adjusted by {}.",
            Money::format(signed, &w.currency)
        ));
    } else {
        admin.flash("Not adjusted: a balance cannot go below zero.");
    }
    Ok(see_other(&back))
}

#[derive(Deserialize)]
pub struct RefundTopupForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    confirm: String,
}

/// Refunds (part of) a top-up through Stripe, at most what it paid and what the wallet
/// still holds; the `charge.refunded` webhook then takes it off the balance.
pub async fn refund_topup(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<(String, String)>,
    Csrf(f): Csrf<RefundTopupForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("refund top-ups")?;
    let (wallet_id, session) = path.into_inner();
    let w = wallet(&state, &wallet_id).await?;
    let back = format!("/admin/wallets/{}", w.id);
    let Some(t) = state
        .store
        .topups(&w.id)
        .await?
        .into_iter()
        .find(|t| t.checkout_session_id == session)
    else {
        return Err(AppError::NotFound("no such top-up".into()));
    };
    if f.confirm != "yes" {
        admin.flash("Not refunded: tick the box to confirm the refund.");
        return Ok(see_other(&back));
    }
    let currency =
        Currency::parse(&t.currency).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let most = (t.pay_minor - t.refunded_minor).min(w.balance_minor);
    let amount = match parse_amount(&f.amount, &currency) {
        Ok(a) if a > 0 && a <= most => a,
        _ => {
            admin.flash(format!(
                "Not refunded: the amount must be more than zero and at most {} (the unspent part).",
                Money::format(most, &t.currency)
            ));
            return Ok(see_other(&back));
        }
    };
    let Some(intent) = t.payment_intent_id.as_deref() else {
        admin.flash("Not refunded: Stripe did not report a PaymentIntent for this top-up.");
        return Ok(see_other(&back));
    };
    // The balance first, so the player cannot spend it while Stripe refunds it.
    let hold = RefundStep::Hold { amount };
    let Some(hold) = state
        .writer
        .topup_refund(&t.checkout_session_id, hold)
        .await?
    else {
        admin.flash("Not refunded: the wallet no longer holds that much of this top-up.");
        return Ok(see_other(&back));
    };
    let key = format!("topup-refund-{}", hold.reference);
    match state.stripe.refund(intent, Some(amount), &key).await {
        Ok(refund_id) => {
            admin
                .audit(
                    "wallet.refund_topup",
                    Some(&w.id),
                    &format!(
                        "{} of {} · Stripe refund {refund_id}",
                        Money::format(amount, &t.currency),
                        t.checkout_session_id
                    ),
                )
                .await;
            admin.flash(format!(
                "Refunded {} to the player's card; it is off the balance.",
                Money::format(amount, &t.currency)
            ));
        }
        Err(e) => {
            // If Stripe did refund after all, its charge.refunded takes the balance again.
            let release = RefundStep::Release(hold);
            state
                .writer
                .topup_refund(&t.checkout_session_id, release)
                .await?;
            tracing::warn!(session = %t.checkout_session_id, error = %e, "top-up refund failed; balance given back");
            admin.flash(format!(
                "Stripe did not refund: {e}. The balance is unchanged."
            ));
        }
    }
    Ok(see_other(&back))
}
