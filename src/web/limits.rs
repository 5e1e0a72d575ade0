//! Rate limits on public endpoints: the pay page's checkout and the wallet's sign-in links.
//! The state lives in the database (`Store::take_rate_token`), so every replica behind a
//! load balancer holds a player to the same allowance.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::Store;

/// One kind of limit: a request per `every`, with bursts of up to `burst` at once.
struct Rule {
    name: &'static str,
    every: Duration,
    burst: u32,
}

impl Rule {
    /// How far ahead of time a key may run: the rest of its burst.
    fn tolerance(&self) -> Duration {
        self.every * self.burst.saturating_sub(1)
    }
}

// An arcade's players may share one address (the venue's Wi-Fi), so the address limit is
// loose; the cookie limit is what stops one phone.
const CHECKOUT_IP: Rule = Rule {
    name: "checkout-ip",
    every: Duration::from_secs(1),
    burst: 30,
};
const CHECKOUT_COOKIE: Rule = Rule {
    name: "checkout-cookie",
    every: Duration::from_secs(6),
    burst: 5,
};
// Sign-in links: a few per address (each is an email someone receives), a few more per
// network.
const SIGNIN_EMAIL: Rule = Rule {
    name: "signin-email",
    every: Duration::from_secs(600),
    burst: 3,
};
const SIGNIN_IP: Rule = Rule {
    name: "signin-ip",
    every: Duration::from_secs(6),
    burst: 10,
};

/// Spent keys are swept at most this often, by each replica.
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

pub struct Limits {
    store: Store,
    last_prune_ms: AtomicI64,
}

impl Limits {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            last_prune_ms: AtomicI64::new(0),
        }
    }

    /// Ok, or how long to wait before the next checkout from this address / page cookie.
    pub async fn checkout(&self, ip: Option<IpAddr>, cookie: &str) -> Result<(), Duration> {
        if let Some(ip) = ip {
            self.take(&CHECKOUT_IP, &ip.to_string()).await?;
        }
        self.take(&CHECKOUT_COOKIE, cookie).await
    }

    /// Ok, or how long to wait before another sign-in link to `email` / from `ip`.
    pub async fn signin(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Duration> {
        if let Some(ip) = ip {
            self.take(&SIGNIN_IP, &ip.to_string()).await?;
        }
        self.take(&SIGNIN_EMAIL, email).await
    }

    async fn take(&self, rule: &Rule, key: &str) -> Result<(), Duration> {
        let now = chrono::Utc::now().timestamp_millis();
        let taken = self
            .store
            .take_rate_token(
                &key_for(rule, key),
                now,
                rule.every.as_millis() as i64,
                rule.tolerance().as_millis() as i64,
            )
            .await;
        self.prune(now).await;
        match taken {
            Ok(None) => Ok(()),
            Ok(Some(wait_ms)) => Err(Duration::from_millis(wait_ms as u64)),
            Err(e) => {
                // A database that cannot count cannot take the payment either; the request
                // goes on and fails there, with the right error.
                tracing::warn!(error = %e, limit = rule.name, "rate limit not checked");
                Ok(())
            }
        }
    }

    async fn prune(&self, now: i64) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.store.prune_rate_limits(now).await {
            tracing::warn!(error = %e, "spent rate-limit keys not swept");
        }
    }
}

/// The row's key: the rule and a hash of what it limits, so no address, cookie or email is
/// stored.
fn key_for(rule: &Rule, key: &str) -> String {
    let digest = Sha256::digest(format!("{}\0{key}", rule.name));
    format!("{}:{}", rule.name, hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limits() -> (Limits, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        (Limits::new(Store::connect(&url).await.unwrap()), dir)
    }

    #[tokio::test]
    async fn one_cookie_is_held_back_others_are_not() {
        let (limits, _dir) = limits().await;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            limits.checkout(Some(ip), "phone-a").await.unwrap();
        }
        let wait = limits.checkout(Some(ip), "phone-a").await.unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        limits.checkout(Some(ip), "phone-b").await.unwrap();
    }

    #[tokio::test]
    async fn the_allowance_comes_back_with_time_and_is_shared_through_the_database() {
        let (limits, _dir) = limits().await;
        let store = &limits.store;
        // Two replicas are two callers of the same rows: the key's allowance is one.
        let (every, tolerance) = (1_000, 2_000);
        for t in [0, 0, 0] {
            assert_eq!(
                store
                    .take_rate_token("k", t, every, tolerance)
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            store
                .take_rate_token("k", 0, every, tolerance)
                .await
                .unwrap(),
            Some(1_000),
            "a burst of three, then the next is a second away"
        );
        assert_eq!(
            store
                .take_rate_token("k", 999, every, tolerance)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            store
                .take_rate_token("k", 1_000, every, tolerance)
                .await
                .unwrap(),
            None
        );
        // Refused requests do not push the allowance further away.
        assert_eq!(
            store
                .take_rate_token("k", 1_000, every, tolerance)
                .await
                .unwrap(),
            Some(1_000)
        );
        // Long idle: a whole burst again, and the spent row can be swept.
        assert_eq!(store.prune_rate_limits(10_000).await.unwrap(), 1);
        for _ in 0..3 {
            assert_eq!(
                store
                    .take_rate_token("k", 10_000, every, tolerance)
                    .await
                    .unwrap(),
                None
            );
        }
    }

    #[test]
    fn keys_never_hold_what_they_limit() {
        let key = key_for(&SIGNIN_EMAIL, "player@example.com");
        assert!(key.starts_with("signin-email:") && !key.contains("example"));
        assert_ne!(key, key_for(&SIGNIN_IP, "player@example.com"));
    }
}
