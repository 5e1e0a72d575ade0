//! Who is asking: the address the per-address limits, sign-in throttling and the audit log
//! go by.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest};

use super::AppState;

/// The peer's address, or with TRUST_PROXY_HEADERS the client's as the reverse proxy saw
/// it (else every visitor would be the proxy, and one would hold back or lock out all).
pub fn addr(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    let trust = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.trust_proxy_headers);
    if trust && peer.is_some_and(may_be_our_proxy) {
        if let Some(ip) = forwarded_for(req.headers()) {
            return Some(ip);
        }
    }
    peer
}

/// Whether a peer could be the owner's reverse proxy: on this machine or the private
/// network (a Docker bridge, a LAN). A peer from the internet reached the server directly,
/// and whatever it wrote in X-Forwarded-For is its own invention.
fn may_be_our_proxy(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => may_be_our_proxy(IpAddr::V4(v4)),
            // Loopback, unique local (fc00::/7) and link-local (fe80::/10).
            None => {
                v6.is_loopback()
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
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

    #[test]
    fn only_a_proxy_on_this_machine_or_the_private_network_is_believed() {
        for peer in [
            "127.0.0.1",
            "172.18.0.1",
            "10.1.2.3",
            "192.168.1.9",
            "::1",
            "fd00::7",
            "::ffff:10.0.0.2",
        ] {
            assert!(may_be_our_proxy(peer.parse().unwrap()), "{peer}");
        }
        for peer in [
            "203.0.113.9",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:203.0.113.9",
        ] {
            assert!(!may_be_our_proxy(peer.parse().unwrap()), "{peer}");
        }
    }
}
