//! `coinpulse webhook-test`: sends a signed `checkout.session.completed` the way Stripe
//! would, for owners without the Stripe CLI.

use std::net::SocketAddr;

use clap::Args;

use super::money::{self, parse_amount};
use crate::config::{parse_secret, Secret, DEFAULT_BIND};
use crate::domain::Currency;
use crate::stripe::webhook::sign;

#[derive(Debug, Args)]
#[command(after_help = money::HELP)]
pub struct WebhookTestArgs {
    /// The cabinet the test payment is for.
    #[arg(long)]
    machine_id: String,
    /// Amount paid, e.g. 1.00 (see below).
    #[arg(long, default_value = "1.00")]
    amount: String,
    /// Currency of the payment (3-letter ISO code).
    #[arg(long, default_value = "usd")]
    currency: String,
    /// Webhook URL. Default: /webhooks/stripe on the server running here (its BIND).
    #[arg(long)]
    url: Option<String>,
    /// The server's webhook signing secret (whsec_…), to sign the test event with.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", value_parser = parse_secret, hide_env_values = true)]
    stripe_webhook_secret: Option<Secret>,
    /// The address the server running here listens on (its BIND).
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND)]
    bind: SocketAddr,
}

/// A realistic `checkout.session.completed` body (the fields coinpulse reads, plus some it
/// must ignore).
pub fn checkout_completed_event(
    event_id: &str,
    session_id: &str,
    machine_id: &str,
    amount: i64,
    currency: &str,
) -> serde_json::Value {
    serde_json::json!({
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": currency,
            "customer_details": null,
            "client_reference_id": null,
            "metadata": { "machine_id": machine_id },
            "mode": "payment",
            "payment_intent": format!("pi_test_{}", &session_id[session_id.len().saturating_sub(12)..]),
            "payment_status": "paid",
            "status": "complete",
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 }
        }}
    })
}

pub async fn run(args: WebhookTestArgs) -> anyhow::Result<()> {
    let currency =
        Currency::parse(&args.currency).map_err(|e| anyhow::anyhow!("--currency: {e}"))?;
    let amount =
        parse_amount(&args.amount, &currency).map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
    let secret = args
        .stripe_webhook_secret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET: not set; the test webhook must be signed with the server's secret"))?;
    let url = args.url.unwrap_or_else(|| {
        format!(
            "http://{}/webhooks/stripe",
            crate::mqtt::broker::local_target(args.bind)
        )
    });
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let body = checkout_completed_event(
        &format!("evt_test_{suffix}"),
        &format!("cs_test_{suffix}"),
        &args.machine_id,
        amount,
        currency.as_str(),
    )
    .to_string();
    let header = sign(
        secret.expose(),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    let res = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("could not reach {url}: {e}"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    println!("{status} {text}");
    if !status.is_success() {
        anyhow::bail!("the server refused the test webhook");
    }
    Ok(())
}
