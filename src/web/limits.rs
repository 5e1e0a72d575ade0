//! Rate limits on public endpoints: the pay page's checkout and the wallet's sign-in links.
//! The state lives in the database (`Store::take_rate_token`), so every replica behind a
//! load balancer holds a player to the same allowance.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::domain::Keys;
use crate::error::{AppError, PageError};
use crate::store::Store;

/// Why a request may not go on.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its allowance is spent: this long until the next one.
    Wait(Duration),
    /// The database could not count it. Refused rather than let through: a checkout goes
    /// to Stripe before it writes anything, so a database taking no writes would otherwise
    /// open sessions without limit.
    Uncounted,
}

impl Refusal {
    /// The page for a refused player form: 429 with Retry-After and `too_many(wait)`, or
    /// 503 with `paused` when the request could not be counted.
    pub fn into_page(
        self,
        too_many: impl FnOnce(Duration) -> String,
        paused: &str,
        back: Option<String>,
    ) -> PageError {
        match self {
            Refusal::Wait(wait) => AppError::TooManyRequests {
                message: too_many(wait),
                retry_after_secs: wait.as_secs().max(1),
            }
            .page("Too many attempts", back),
            Refusal::Uncounted => {
                AppError::Unavailable(paused.to_owned()).page("Please try again", back)
            }
        }
    }
}

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
    keys: Keys,
    last_prune_ms: AtomicI64,
}

impl Limits {
    pub fn new(store: Store, keys: Keys) -> Self {
        Self {
            store,
            keys,
            last_prune_ms: AtomicI64::new(0),
        }
    }

    /// Ok, or why not another checkout from this address / page cookie.
    pub async fn checkout(&self, ip: Option<IpAddr>, cookie: &str) -> Result<(), Refusal> {
        if let Some(ip) = ip {
            self.take(&CHECKOUT_IP, &network(ip)).await?;
        }
        self.take(&CHECKOUT_COOKIE, cookie).await
    }

    /// Ok, or why not another sign-in link to `email` / from `ip`.
    pub async fn signin(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Refusal> {
        if let Some(ip) = ip {
            self.take(&SIGNIN_IP, &network(ip)).await?;
        }
        self.take(&SIGNIN_EMAIL, email).await
    }

    async fn take(&self, rule: &Rule, key: &str) -> Result<(), Refusal> {
        let now = chrono::Utc::now().timestamp_millis();
        let taken = self
            .store
            .take_rate_token(
                &self.key_for(rule, key),
                now,
                rule.every.as_millis() as i64,
                rule.tolerance().as_millis() as i64,
            )
            .await;
        self.prune(now).await;
        match taken {
            Ok(None) => Ok(()),
            Ok(Some(wait_ms)) => Err(Refusal::Wait(Duration::from_millis(wait_ms as u64))),
            Err(e) => {
                tracing::warn!(error = %e, limit = rule.name, "rate limit not counted; refused");
                Err(Refusal::Uncounted)
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

    /// The row's key: the rule and a keyed hash of what it limits, so the table holds no
    /// address, cookie or email, nor anything that guessing could turn back into one.
    fn key_for(&self, rule: &Rule, key: &str) -> String {
        format!(
            "{}:{}",
            rule.name,
            self.keys
                .mac("rate-limit", &format!("{}\0{key}", rule.name))
        )
    }
}

/// What an address limit counts by: an IPv4 address, or an IPv6 /64 (one home or phone
/// gets a whole /64, so single IPv6 addresses would be free for the taking).
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limits() -> (Limits, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let store = Store::connect(&url).await.unwrap();
        (
            Limits::new(store, Keys::new(b"limits-test-key".to_vec())),
            dir,
        )
    }

    #[tokio::test]
    async fn one_cookie_is_held_back_others_are_not() {
        let (limits, _dir) = limits().await;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            limits.checkout(Some(ip), "phone-a").await.unwrap();
        }
        let Err(Refusal::Wait(wait)) = limits.checkout(Some(ip), "phone-a").await else {
            panic!("the sixth checkout from one phone is held back");
        };
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
        let take = |t: i64| store.take_rate_token("k", t, 1_000, 2_000);
        for _ in 0..3 {
            assert_eq!(take(0).await.unwrap(), None);
        }
        assert_eq!(
            take(0).await.unwrap(),
            Some(1_000),
            "a burst of three, then the next is a second away"
        );
        assert_eq!(take(999).await.unwrap(), Some(1));
        assert_eq!(take(1_000).await.unwrap(), None);
        // Refused requests do not push the allowance further away.
        assert_eq!(take(1_000).await.unwrap(), Some(1_000));
        assert_eq!(take(1_500).await.unwrap(), Some(500));
        // Long idle: a whole burst again, and the spent row can be swept.
        assert_eq!(store.prune_rate_limits(10_000).await.unwrap(), 1);
        for _ in 0..3 {
            assert_eq!(take(10_000).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn keys_never_hold_what_they_limit() {
        let (limits, _dir) = limits().await;
        let key = limits.key_for(&SIGNIN_EMAIL, "player@example.com");
        assert!(key.starts_with("signin-email:") && !key.contains("example"));
        assert_ne!(key, limits.key_for(&SIGNIN_IP, "player@example.com"));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let net = |s: &str| network(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2:aaaa::1"), net("2001:db8:1:2:bbbb::9"));
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(net("192.0.2.7"), "192.0.2.7");
    }
}
