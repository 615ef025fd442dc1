//! `[server]` and `[tls]`: where and how flagpost listens, and which requests it takes
//! (Unleash Edge's base path, token header, allow and deny lists, trusted proxies, redirect).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::cli::Cli;
use super::file::RawFile;
use super::layer::Layers;
use super::unit::MIN_PERIOD;
use super::{invalid, ConfigError, ServerConfig, TlsConfig};

/// `[server]` and `[tls]`: where and how flagpost listens.
pub(super) fn server(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
) -> Result<ServerConfig, ConfigError> {
    let (interface, port) = listen_address(cli, l, raw)?;
    let rs = &raw.server;
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
    let (header_read_timeout, body_read_timeout, idle_timeout) = read_timeouts(cli, l, raw)?;
    let request_timeout = match cli.edge_request_timeout {
        // Unleash Edge's name, when given and flagpost's is not.
        Some(t) if !l.explicit("request_timeout") && t >= MIN_PERIOD => t,
        _ => period(
            "request_timeout",
            "server.request_timeout",
            cli.request_timeout,
            rs.request_timeout.as_ref(),
        )?,
    };
    let (shutdown_delay, shutdown_grace) = shutdown(cli, l, raw)?;
    let max_body_size = l.size(
        "max_body_size",
        "server.max_body_size",
        cli.max_body_size,
        rs.max_body_size.as_ref(),
    )?;
    let max_metrics_body_size = l.size(
        "max_metrics_body_size",
        "server.max_metrics_body_size",
        cli.max_metrics_body_size,
        rs.max_metrics_body_size.as_ref(),
    )?;
    let max_connections = l.count(
        "max_connections",
        "server.max_connections",
        cli.max_connections,
        rs.max_connections,
    )?;
    let max_in_flight = l.count(
        "max_in_flight",
        "server.max_in_flight",
        cli.max_in_flight,
        rs.max_in_flight,
    )?;
    let trusted_proxies = trusted_proxies(cli, l, raw)?;
    let base_path = base_path(&l.pick("base_path", cli.base_path.clone(), rs.base_path.clone()))?;
    let token_header = header_name(
        "server.token_header (--token-header / TOKEN_HEADER, --edge-auth-header / EDGE_AUTH_HEADER)",
        cli.token_header
            .clone()
            .or(cli.edge_auth_header.clone())
            .or(rs.token_header.clone()),
    )?;
    let (allow_list, deny_list) = peer_lists(cli, l, raw)?;
    let tls = tls(cli, l, raw, interface)?;
    let plain_http = plain_http(cli, l, raw, tls.as_ref(), port)?;
    Ok(ServerConfig {
        listen: plain_http.then(|| SocketAddr::new(interface, port)),
        header_read_timeout,
        idle_timeout,
        body_read_timeout,
        request_timeout,
        max_body_size,
        max_metrics_body_size,
        max_connections,
        max_in_flight,
        trusted_proxies,
        base_path,
        token_header,
        allow_list,
        deny_list,
        shutdown_delay,
        shutdown_grace,
        tls,
    })
}

/// How long a request's head, then its body, may take to arrive, and how long an idle
/// connection is kept.
fn read_timeouts(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
) -> Result<(Duration, Duration, Duration), ConfigError> {
    let rs = &raw.server;
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
    let header = period(
        "header_read_timeout",
        "server.header_read_timeout",
        cli.header_read_timeout,
        rs.header_read_timeout.as_ref(),
    )?;
    let idle = period(
        "idle_timeout",
        "server.idle_timeout",
        cli.idle_timeout,
        rs.idle_timeout.as_ref(),
    )?;
    let body = period(
        "body_read_timeout",
        "server.body_read_timeout",
        cli.body_read_timeout,
        rs.body_read_timeout.as_ref(),
    )?;
    Ok((header, body, idle))
}

/// On SIGTERM: how long flagpost keeps serving with `/ready` at 503, then how long it lets
/// requests in flight finish.
fn shutdown(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<(Duration, Duration), ConfigError> {
    let delay = l.duration(
        "shutdown_delay",
        "server.shutdown_delay",
        cli.shutdown_delay,
        raw.server.shutdown_delay.as_ref(),
        Duration::ZERO,
    )?;
    let grace = l.duration(
        "shutdown_grace",
        "server.shutdown_grace",
        cli.shutdown_grace,
        raw.server.shutdown_grace.as_ref(),
        Duration::ZERO,
    )?;
    Ok((delay, grace))
}

/// Unleash Edge's allow and deny lists of peer networks.
fn peer_lists(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
) -> Result<(Vec<ipnet::IpNet>, Vec<ipnet::IpNet>), ConfigError> {
    let rs = &raw.server;
    let allow = networks(
        "server.allow_list (--allow-list / ALLOW_LIST)",
        l.list("allow_list", &cli.allow_list, rs.allow_list.as_ref()),
    )?;
    let deny = networks(
        "server.deny_list (--deny-list / DENY_LIST)",
        l.list("deny_list", &cli.deny_list, rs.deny_list.as_ref()),
    )?;
    Ok((allow, deny))
}

/// A CORS list (header names or methods) as one header value; `None` for an empty list.
pub(super) fn header_list(
    key: &str,
    items: Vec<String>,
    valid: impl Fn(&str) -> bool,
) -> Result<Option<http::HeaderValue>, ConfigError> {
    if let Some(bad) = items.iter().find(|i| !valid(i)) {
        return Err(invalid(key, format!("{bad:?} is not a valid name here")));
    }
    if items.is_empty() {
        return Ok(None);
    }
    http::HeaderValue::from_str(&items.join(", "))
        .map(Some)
        .map_err(|_| invalid(key, "not a valid header value"))
}

/// A base path as Unleash Edge takes it (`unleash`, `/unleash/`, `/a/b`): `""` or `/a/b`.
fn base_path(text: &str) -> Result<String, ConfigError> {
    let trimmed = text.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let fine = trimmed.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    });
    if !fine {
        return Err(invalid(
            "server.base_path (--base-path / BASE_PATH)",
            format!("{text:?} is not a path prefix (letters, digits, - . _ ~ between slashes)"),
        ));
    }
    Ok(format!("/{trimmed}"))
}

/// A header name, `Authorization` when none is given.
pub(super) fn header_name(
    key: &str,
    given: Option<String>,
) -> Result<http::HeaderName, ConfigError> {
    match given.as_deref().map(str::trim) {
        None | Some("") => Ok(http::header::AUTHORIZATION),
        Some(name) => http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(key, format!("{name:?} is not an HTTP header name"))),
    }
}

/// IPs and CIDRs.
fn networks(key: &str, list: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        key,
                        format!("{t:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

/// The address plain HTTP listens on (and HTTPS, on its own port).
fn listen_address(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<(IpAddr, u16), ConfigError> {
    let interface_text = l.pick(
        "interface",
        cli.interface.clone(),
        raw.server.interface.clone(),
    );
    let interface: IpAddr = interface_text.trim().parse().map_err(|_| {
        invalid(
            "server.interface (--interface / INTERFACE)",
            format!("{interface_text:?} is not an IP address (use e.g. 0.0.0.0, 127.0.0.1 or ::)"),
        )
    })?;
    // `-p` before the subcommand (or after `offline`) is --port; after `edge` it is Edge's
    // --pretrusted-tokens.
    let offline_short = match &cli.command {
        Some(super::cli::Command::Offline(a)) => a.port_short,
        _ => None,
    };
    let port = match cli.port_short.or(offline_short) {
        Some(port) => port,
        None => l.pick("port", cli.port, raw.server.port),
    };
    Ok((interface, port))
}

/// Whether plain HTTP is served beside HTTPS: it can be turned off only when TLS is on, and
/// the two cannot share a port.
fn plain_http(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
    tls: Option<&TlsConfig>,
    port: u16,
) -> Result<bool, ConfigError> {
    let plain_http = !l.pick(
        "tls_disable_http",
        cli.tls_disable_http,
        raw.tls.plain_http.map(|p| !p),
    );
    if tls.is_none() && !plain_http {
        return Err(invalid(
            "tls.plain_http",
            "plain HTTP can only be turned off when TLS is on",
        ));
    }
    if let Some(t) = tls {
        if plain_http && t.listen.port() == port && port != 0 {
            return Err(invalid("tls.port", "HTTPS and HTTP cannot share a port"));
        }
    }

    Ok(plain_http)
}

/// The proxies whose forwarding headers are believed.
fn trusted_proxies(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let listed = networks(
        "server.trusted_proxies (--proxy-trusted-servers / PROXY_TRUSTED_SERVERS)",
        l.list(
            "proxy_trusted_servers",
            &cli.proxy_trusted_servers,
            raw.server.trusted_proxies.as_ref(),
        ),
    )?;
    if listed.is_empty() && l.pick("trust_proxy", cli.trust_proxy, raw.server.trust_proxy) {
        // Unleash Edge's --trust-proxy without a list: every peer's forwarding headers.
        return Ok(["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect());
    }
    Ok(listed)
}

/// HTTPS, when enabled: its port on `interface`, the certificate and the key.
fn tls(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
    interface: IpAddr,
) -> Result<Option<TlsConfig>, ConfigError> {
    let redirect_http = l.pick(
        "redirect_http_to_https",
        cli.redirect_http_to_https,
        raw.tls.redirect_http,
    );
    let enabled = l.pick("tls_enable", cli.tls_enable, raw.tls.enabled);
    if redirect_http && !enabled {
        return Err(invalid(
            "tls.redirect_http (--redirect-http-to-https / REDIRECT_HTTP_TO_HTTPS)",
            "redirecting to HTTPS needs TLS on (--tls-enable with a certificate and key)",
        ));
    }
    Ok(if enabled {
        let needed = |key: &str, path: Option<std::path::PathBuf>| {
            path.ok_or_else(|| {
                invalid(
                    key,
                    "TLS is enabled: give the certificate and the key (PEM files)",
                )
            })
        };
        Some(TlsConfig {
            listen: SocketAddr::new(
                interface,
                l.pick("tls_server_port", cli.tls_server_port, raw.tls.port),
            ),
            cert_file: needed(
                "tls.cert_file (--tls-server-cert / TLS_SERVER_CERT)",
                l.path("tls_server_cert", &cli.tls_server_cert, &raw.tls.cert_file),
            )?,
            key_file: needed(
                "tls.key_file (--tls-server-key / TLS_SERVER_KEY)",
                l.path("tls_server_key", &cli.tls_server_key, &raw.tls.key_file),
            )?,
            redirect_http,
        })
    } else {
        None
    })
}
