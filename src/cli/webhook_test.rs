//! `coinpulse webhook-test`: sends a signed `checkout.session.completed` the way Stripe
//! would, for owners without the Stripe CLI.

use clap::Args;

use crate::config::Settings;
use crate::stripe::webhook::sign;

#[derive(Debug, Args)]
pub struct WebhookTestArgs {
    #[arg(long)]
    machine_id: String,
    /// Amount paid, in minor units (cents).
    #[arg(long, default_value_t = 100)]
    amount: i64,
    #[arg(long, default_value = "usd")]
    currency: String,
    /// Webhook URL. Default: this server's /webhooks/stripe on BIND.
    #[arg(long)]
    url: Option<String>,
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

pub async fn run(args: WebhookTestArgs, settings: &Settings) -> anyhow::Result<()> {
    let secret = settings
        .stripe_webhook_secret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET: not set; the test webhook must be signed with the server's secret"))?;
    let url = args.url.unwrap_or_else(|| {
        format!(
            "http://{}/webhooks/stripe",
            crate::mqtt::broker::local_target(settings.bind)
        )
    });
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let body = checkout_completed_event(
        &format!("evt_test_{suffix}"),
        &format!("cs_test_{suffix}"),
        &args.machine_id,
        args.amount,
        &args.currency.to_ascii_lowercase(),
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
