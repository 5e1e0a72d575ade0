//! Who is asking: the address the per-address limits, sign-in throttling and the audit log
//! go by.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest};

use super::AppState;

/// The peer's address, or with TRUST_PROXY_HEADERS the client's as the reverse proxy saw
/// it (else every visitor would be the proxy, and one would hold back or lock out all).
pub fn addr(req: &HttpRequest) -> Option<IpAddr> {
    let trust = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.trust_proxy_headers);
    if trust {
        if let Some(ip) = forwarded_for(req.headers()) {
            return Some(ip);
        }
    }
    req.peer_addr().map(|a| a.ip())
}

/// [`addr`] as text, for logs and the audit trail.
pub fn ip(req: &HttpRequest) -> Option<String> {
    addr(req).map(|a| a.to_string())
}

/// The last X-Forwarded-For entry: the one our proxy added (Caddy replaces the header with
/// it, nginx's `$proxy_add_x_forwarded_for` appends it). Earlier entries, and a `Forwarded`
/// header, are whatever the client chose to send, so they are never believed.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .last()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_the_proxys_own_entry_counts() {
        let ip = |pairs: &[(&str, &str)]| forwarded_for(&headers(pairs)).map(|a| a.to_string());
        assert_eq!(
            ip(&[("x-forwarded-for", "203.0.113.7")]).as_deref(),
            Some("203.0.113.7")
        );
        // A client that sends its own header gets the proxy's entry appended after it.
        assert_eq!(
            ip(&[("x-forwarded-for", "10.9.9.9, 198.51.100.4")]).as_deref(),
            Some("198.51.100.4")
        );
        assert_eq!(
            ip(&[
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-for", "198.51.100.4")
            ])
            .as_deref(),
            Some("198.51.100.4")
        );
        assert_eq!(
            ip(&[("x-forwarded-for", "[2001:db8::5]:4711")]).as_deref(),
            Some("2001:db8::5")
        );
        assert_eq!(ip(&[("forwarded", "for=10.9.9.9")]), None, "never believed");
        assert_eq!(ip(&[("x-forwarded-for", "not-an-address")]), None);
    }
}
