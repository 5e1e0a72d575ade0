//! Prometheus metrics for `GET /metrics`. Counters and histograms are recorded where things
//! happen, through the `metrics` facade; gauges about the outbox, the review queue and the
//! broker are read when Prometheus scrapes.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: the pulse path lives between half a millisecond and a
/// second; the tail up to 10 s shows a broker or disk in trouble.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use (every server in a process shares it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("coinpulse_writer_batch_size".into()), BATCH)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "coinpulse_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_counter!(
        "coinpulse_webhooks_total",
        "Stripe webhooks processed, by outcome"
    );
    describe_counter!(
        "coinpulse_pulses_queued_total",
        "Pulses written to the outbox"
    );
    describe_counter!(
        "coinpulse_pulses_handed_total",
        "Pulses handed to the broker"
    );
    describe_counter!(
        "coinpulse_pulses_acked_total",
        "Pulses a cabinet acknowledged"
    );
    describe_histogram!(
        "coinpulse_webhook_to_broker_seconds",
        Unit::Seconds,
        "From a webhook's arrival to its pulse handed to the broker (and the 200)"
    );
    describe_histogram!(
        "coinpulse_pulse_to_ack_seconds",
        Unit::Seconds,
        "From a pulse's creation to the cabinet's ack"
    );
    describe_histogram!("coinpulse_writer_batch_size", "Requests per writer commit");
    describe_histogram!(
        "coinpulse_writer_commit_seconds",
        Unit::Seconds,
        "One writer batch: apply, commit and fsync"
    );
    describe_gauge!(
        "coinpulse_mqtt_connected",
        "1 while the server's MQTT connection is up"
    );
    describe_gauge!(
        "coinpulse_cabinets_connected",
        "Cabinets connected: to the embedded broker, or whose last status said online on an external one"
    );
    describe_gauge!(
        "coinpulse_pulses_waiting",
        "Pulses not yet handed to the broker"
    );
    describe_gauge!(
        "coinpulse_oldest_waiting_pulse_seconds",
        Unit::Seconds,
        "Age of the oldest pulse not yet handed to the broker"
    );
    describe_gauge!(
        "coinpulse_review_queue",
        "Payments waiting for the owner's review"
    );
}

pub fn http_request(route: &str, method: &str, status: u16) {
    counter!("coinpulse_http_requests_total", "route" => route.to_owned(),
        "method" => method.to_owned(), "status" => status.to_string())
    .increment(1);
}

pub fn webhook(outcome: &'static str, elapsed: std::time::Duration, pulse: bool) {
    counter!("coinpulse_webhooks_total", "outcome" => outcome).increment(1);
    if pulse {
        histogram!("coinpulse_webhook_to_broker_seconds").record(elapsed.as_secs_f64());
    }
}

pub fn pulses_queued(n: usize) {
    counter!("coinpulse_pulses_queued_total").increment(n as u64);
}

pub fn pulses_handed(n: usize) {
    counter!("coinpulse_pulses_handed_total").increment(n as u64);
}

/// An ack recorded for pulse `pulse_id` (a UUIDv7: its creation time is in it).
pub fn pulse_acked(pulse_id: &str) {
    counter!("coinpulse_pulses_acked_total").increment(1);
    let created = uuid::Uuid::parse_str(pulse_id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|t| t.to_unix());
    if let Some((secs, nanos)) = created {
        let created = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        if let Ok(age) = std::time::SystemTime::now().duration_since(created) {
            histogram!("coinpulse_pulse_to_ack_seconds").record(age.as_secs_f64());
        }
    }
}

pub fn writer_batch(size: usize, elapsed: std::time::Duration) {
    histogram!("coinpulse_writer_batch_size").record(size as f64);
    histogram!("coinpulse_writer_commit_seconds").record(elapsed.as_secs_f64());
}

/// What is read at scrape time.
pub struct Snapshot {
    pub mqtt_connected: bool,
    pub cabinets_connected: usize,
    pub pulses_waiting: i64,
    pub oldest_waiting_seconds: f64,
    pub review_queue: i64,
}

/// The exposition text, with `snapshot`'s gauges set first.
pub fn render(snapshot: &Snapshot) -> String {
    let handle = handle();
    gauge!("coinpulse_mqtt_connected").set(if snapshot.mqtt_connected { 1.0 } else { 0.0 });
    gauge!("coinpulse_cabinets_connected").set(snapshot.cabinets_connected as f64);
    gauge!("coinpulse_pulses_waiting").set(snapshot.pulses_waiting as f64);
    gauge!("coinpulse_oldest_waiting_pulse_seconds").set(snapshot.oldest_waiting_seconds);
    gauge!("coinpulse_review_queue").set(snapshot.review_queue as f64);
    handle.run_upkeep();
    handle.render()
}
