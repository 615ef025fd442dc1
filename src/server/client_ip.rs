//! The client's address for the context's `remoteAddress`: the socket peer, unless the peer is a
//! configured trusted proxy, in which case `X-Forwarded-For` (or `Forwarded`) is read from the
//! right, skipping trusted proxies, to the first address that is not one. IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) become IPv4.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Shows an IPv4-mapped IPv6 address as IPv4.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// One address from a header element: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `"[::1]"`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = t.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

/// The addresses a request passed through, nearest last.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|v| v.split(','))
            .map(parse_node)
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
    }
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v))?
            })
        })
        .collect()
}

/// The client address for a request from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = normalize(peer);
    if proxies.is_empty() || !trusted(peer, proxies) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    let mut client = peer;
    for ip in chain.into_iter().rev().map(normalize) {
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_taken_as_they_are() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(ip("10.0.0.9"), &h, &[]), ip("10.0.0.9"));
        let proxies = ["10.0.0.1/32".parse().unwrap()];
        assert_eq!(client_ip(ip("10.0.0.9"), &h, &proxies), ip("10.0.0.9"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.9"), &h, &[]), ip("10.0.0.9"));
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let proxies: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.1/32".parse().unwrap(),
        ];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            client_ip(ip("192.168.1.1"), &h, &proxies),
            ip("1.2.3.4"),
            "a spoofed left part is ignored"
        );
        let h = headers(&[
            ("x-forwarded-for", "10.2.2.2"),
            ("x-forwarded-for", "10.3.3.3"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &proxies),
            ip("10.2.2.2"),
            "all trusted: the leftmost"
        );
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &proxies),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("x-forwarded-for", "::ffff:1.2.3.4")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &proxies),
            ip("1.2.3.4")
        );
        let h = headers(&[("x-forwarded-for", "not-an-ip, 1.2.3.4")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &proxies),
            ip("10.0.0.1"),
            "a malformed chain is not trusted"
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_an_untrusted_peer_always_wins(xff in "\\PC{0,80}", fwd in "\\PC{0,80}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = xff.parse() { h.insert("x-forwarded-for", v); }
            if let Ok(v) = fwd.parse() { h.insert("forwarded", v); }
            let proxies = vec!["10.0.0.0/8".parse().unwrap()];
            prop_assert_eq!(client_ip(ip("8.8.8.8"), &h, &proxies), ip("8.8.8.8"));
            let _ = client_ip(ip("10.0.0.1"), &h, &proxies);
        }
    }
}
