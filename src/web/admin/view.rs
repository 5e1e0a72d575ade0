//! Small view helpers shared by the dashboard's pages: times for people, money per
//! currency, a cabinet's connection state.

use chrono::{DateTime, Utc};

use crate::domain::{Cabinet, Money};
use crate::store::Takings;
use crate::web::AppState;

pub use crate::domain::parse_db_time as parse_time;

/// "just now", "5 min ago", "3 h ago", "2 days ago"; "never" for none.
pub fn ago(db: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = db.and_then(parse_time) else {
        return "never".into();
    };
    let secs = (now - t).num_seconds().max(0);
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => {
            let days = secs / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

/// `2026-12-02 14:05` (UTC) from a stored time.
pub fn when(db: &str) -> String {
    match parse_time(db) {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => db.to_owned(),
    }
}

/// Net takings, one amount per currency ("$12.00 · €3.00"); nothing is zero in `currency`.
pub fn takings(t: &[Takings], currency: &str) -> String {
    if t.is_empty() {
        return Money::format(0, currency);
    }
    t.iter()
        .map(|t| Money::format(t.net_minor, &t.currency))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A cabinet's link as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Connected,
    Disconnected,
    /// An external broker does not say; the last status message does.
    Unknown,
}

impl Link {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "offline",
            Self::Unknown => "unknown",
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            Self::Connected => "ok",
            Self::Disconnected => "bad",
            Self::Unknown => "muted",
        }
    }
}

pub async fn link(state: &AppState, c: &Cabinet) -> Link {
    match &state.presence {
        Some(p) if p.link(&c.machine_id).await.connected => Link::Connected,
        Some(_) => Link::Disconnected,
        None if c.online => Link::Connected,
        None if c.last_seen_at.is_some() => Link::Disconnected,
        None => Link::Unknown,
    }
}

/// A payment as a table row.
pub struct PaymentLine {
    pub id: String,
    pub when: String,
    pub machine_id: String,
    pub amount: String,
    pub credits: i64,
    /// pending / credited / delivered / refunded / review / …
    pub status: &'static str,
    /// The status as a CSS class.
    pub status_class: String,
    pub email: String,
    pub reason: String,
}

/// The dashboard's name for a payment's state: a credited payment the cabinet acked is
/// "delivered".
pub fn status_label(p: &crate::store::Payment) -> &'static str {
    use crate::domain::PaymentStatus as S;
    match p.status {
        S::Credited if p.pulse_acked_at.is_some() => "delivered",
        S::PartiallyRefunded => "partly refunded",
        s => s.as_str(),
    }
}

impl From<&crate::store::Payment> for PaymentLine {
    fn from(p: &crate::store::Payment) -> Self {
        let mut amount = Money::format(p.amount_minor, &p.currency);
        if p.refunded_minor > 0 {
            amount.push_str(&format!(
                " ({} refunded)",
                Money::format(p.refunded_minor, &p.currency)
            ));
        }
        Self {
            id: p.id.clone(),
            when: when(&p.created_at),
            machine_id: p.machine_id.clone().unwrap_or_default(),
            amount,
            credits: p.credits,
            status: status_label(p),
            status_class: status_label(p).replace(' ', "-"),
            email: p.email.clone().unwrap_or_default(),
            reason: p.review_reason.clone().unwrap_or_default(),
        }
    }
}

pub fn lines(ps: &[crate::store::Payment]) -> Vec<PaymentLine> {
    ps.iter().map(PaymentLine::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_reads_like_people_talk() {
        let now = parse_time("2026-12-02T12:00:00.000Z").unwrap();
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(Some("2026-12-02T11:59:30.000Z"), now), "just now");
        assert_eq!(ago(Some("2026-12-02T11:55:00.000Z"), now), "5 min ago");
        assert_eq!(ago(Some("2026-12-02T09:00:00.000Z"), now), "3 h ago");
        assert_eq!(ago(Some("2026-12-01T11:00:00.000Z"), now), "1 day ago");
        assert_eq!(when("2026-12-02T09:05:00.000Z"), "2026-12-02 09:05");
    }
}
