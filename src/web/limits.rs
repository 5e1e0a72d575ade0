//! Rate limits on public endpoints (the `governor` crate's keyed GCRA limiters).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys remembered before idle ones are dropped.
const MAX_KEYS: usize = 10_000;

pub struct Limits {
    checkout_ip: DefaultKeyedRateLimiter<IpAddr>,
    checkout_cookie: DefaultKeyedRateLimiter<String>,
    signin_ip: DefaultKeyedRateLimiter<IpAddr>,
    signin_email: DefaultKeyedRateLimiter<String>,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).expect("non-zero"))
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // An arcade's players may share one address (the venue's Wi-Fi), so the
            // address limit is loose; the cookie limit is what stops one phone.
            checkout_ip: RateLimiter::keyed(quota(60, 30)),
            checkout_cookie: RateLimiter::keyed(quota(10, 5)),
            // Sign-in links: a few per address (each is an email someone receives), a few
            // more per network.
            signin_email: RateLimiter::keyed(
                Quota::per_hour(NonZeroU32::new(6).expect("non-zero"))
                    .allow_burst(NonZeroU32::new(3).expect("non-zero")),
            ),
            signin_ip: RateLimiter::keyed(quota(10, 10)),
        }
    }
}

impl Limits {
    /// Ok, or how long to wait before the next checkout from this address / page cookie.
    pub fn checkout(&self, ip: Option<IpAddr>, cookie: &str) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        if let Some(ip) = ip {
            if let Err(not_until) = self.checkout_ip.check_key(&ip) {
                return Err(not_until.wait_time_from(now));
            }
        }
        if let Err(not_until) = self.checkout_cookie.check_key(&cookie.to_owned()) {
            return Err(not_until.wait_time_from(now));
        }
        if self.checkout_cookie.len() > MAX_KEYS || self.checkout_ip.len() > MAX_KEYS {
            self.checkout_cookie.retain_recent();
            self.checkout_ip.retain_recent();
        }
        Ok(())
    }
}

impl Limits {
    /// Ok, or how long to wait before another sign-in link to `email` / from `ip`.
    pub fn signin(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        if let Some(ip) = ip {
            if let Err(not_until) = self.signin_ip.check_key(&ip) {
                return Err(not_until.wait_time_from(now));
            }
        }
        if let Err(not_until) = self.signin_email.check_key(&email.to_owned()) {
            return Err(not_until.wait_time_from(now));
        }
        if self.signin_email.len() > MAX_KEYS || self.signin_ip.len() > MAX_KEYS {
            self.signin_email.retain_recent();
            self.signin_ip.retain_recent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cookie_is_held_back_others_are_not() {
        let limits = Limits::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            limits.checkout(Some(ip), "phone-a").unwrap();
        }
        let wait = limits.checkout(Some(ip), "phone-a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(6));
        limits.checkout(Some(ip), "phone-b").unwrap();
    }
}
