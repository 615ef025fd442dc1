//! The router: `(method, path)` → [`Route`], by exact path segments (never by substring).

use http::Method;

/// Every route flagpost answers. The discriminant indexes [`ROUTE_LABELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ClientFeatures = 0,
    ClientFeature,
    Frontend,
    FrontendAll,
    FrontendFeature,
    Health,
    Ready,
    Metrics,
    /// `POST /edge/validate`: lets another flagpost or an Unleash Edge use this one upstream.
    EdgeValidate,
    ClientMetrics,
    ClientRegister,
    ClientBulkMetrics,
    FrontendMetrics,
    FrontendRegister,
    /// `GET /api/client/streaming`: Server-Sent Events of flag changes.
    ClientStreaming,
    /// `GET /api/client/delta`: the changes since an event id.
    ClientDelta,
    /// `POST /internal-backstage/explain`: why the token in `Authorization` is served or not.
    Explain,
    /// The inspection endpoints, behind `backstage.token`.
    BackstageTokens,
    BackstageFeatures,
    BackstageMetricsBatch,
    BackstageInstanceData,
    /// `POST /api/client/metrics/edge`: a downstream Unleash Edge's instance data.
    ClientEdgeMetrics,
    /// No route: the label for 404s.
    Unmatched,
}

/// Route templates, used as the `route` metric label.
pub const ROUTE_LABELS: &[&str] = &[
    "/api/client/features",
    "/api/client/features/{name}",
    "/api/frontend",
    "/api/frontend/all",
    "/api/frontend/features/{name}",
    "/health",
    "/ready",
    "/metrics",
    "/edge/validate",
    "/api/client/metrics",
    "/api/client/register",
    "/api/client/metrics/bulk",
    "/api/frontend/client/metrics",
    "/api/frontend/client/register",
    "/api/client/streaming",
    "/api/client/delta",
    "/internal-backstage/explain",
    "/internal-backstage/tokens",
    "/internal-backstage/features",
    "/internal-backstage/metricsbatch",
    "/internal-backstage/instancedata",
    "/api/client/metrics/edge",
    "unmatched",
];

impl Route {
    pub fn index(self) -> usize {
        self as usize
    }

    /// The methods the route answers (HEAD wherever GET is).
    pub fn allowed(self) -> &'static str {
        match self {
            Route::ClientFeatures => "GET, HEAD, POST",
            Route::ClientFeature | Route::ClientStreaming | Route::ClientDelta => "GET, HEAD",
            Route::Frontend | Route::FrontendAll | Route::FrontendFeature => {
                "GET, HEAD, POST, OPTIONS"
            }
            Route::Health | Route::Ready | Route::Metrics => "GET, HEAD",
            Route::EdgeValidate
            | Route::ClientMetrics
            | Route::ClientRegister
            | Route::ClientBulkMetrics
            | Route::ClientEdgeMetrics
            | Route::Explain => "POST",
            Route::BackstageTokens
            | Route::BackstageFeatures
            | Route::BackstageMetricsBatch
            | Route::BackstageInstanceData => "GET, HEAD",
            Route::FrontendMetrics | Route::FrontendRegister => "POST, OPTIONS",
            Route::Unmatched => "",
        }
    }

    /// Frontend API routes get CORS headers and answer preflights.
    pub fn is_frontend(self) -> bool {
        matches!(
            self,
            Route::Frontend
                | Route::FrontendAll
                | Route::FrontendFeature
                | Route::FrontendMetrics
                | Route::FrontendRegister
        )
    }

    fn accepts(self, method: &Method) -> bool {
        match self {
            Route::Frontend | Route::FrontendAll | Route::FrontendFeature => matches!(
                *method,
                Method::GET | Method::HEAD | Method::POST | Method::OPTIONS
            ),
            // Unleash Edge answers POST like GET (the query filters; the body is not read).
            Route::ClientFeatures => matches!(*method, Method::GET | Method::HEAD | Method::POST),
            Route::EdgeValidate
            | Route::ClientMetrics
            | Route::ClientRegister
            | Route::ClientBulkMetrics
            | Route::ClientEdgeMetrics
            | Route::Explain => *method == Method::POST,
            Route::FrontendMetrics | Route::FrontendRegister => {
                matches!(*method, Method::POST | Method::OPTIONS)
            }
            Route::Unmatched => false,
            _ => matches!(*method, Method::GET | Method::HEAD),
        }
    }
}

/// A matched request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route: Route,
    /// The feature name in `/features/{name}`, percent-decoded.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed(Route),
    /// The path has a segment that is not UTF-8 once percent-decoded.
    BadPath,
}

/// Matches a request. One trailing `/` is ignored.
pub fn route(method: &Method, path: &str) -> Result<Matched, RouteError> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let mut name = None;
    let route = match path {
        "/api/client/features" => Route::ClientFeatures,
        "/api/client/streaming" => Route::ClientStreaming,
        "/api/client/delta" => Route::ClientDelta,
        "/internal-backstage/explain" => Route::Explain,
        "/internal-backstage/tokens" => Route::BackstageTokens,
        "/internal-backstage/features" => Route::BackstageFeatures,
        "/internal-backstage/metricsbatch" => Route::BackstageMetricsBatch,
        "/internal-backstage/instancedata" => Route::BackstageInstanceData,
        "/api/frontend" | "/api/proxy" => Route::Frontend,
        "/api/frontend/all" | "/api/proxy/all" => Route::FrontendAll,
        "/health" | "/internal-backstage/health" => Route::Health,
        "/ready" | "/internal-backstage/ready" => Route::Ready,
        "/metrics" | "/internal-backstage/metrics" => Route::Metrics,
        "/edge/validate" => Route::EdgeValidate,
        "/api/client/metrics" => Route::ClientMetrics,
        "/api/client/register" => Route::ClientRegister,
        "/api/client/metrics/bulk" => Route::ClientBulkMetrics,
        "/api/client/metrics/edge" => Route::ClientEdgeMetrics,
        // Unleash Edge also takes them under `/all` (what a frontend SDK pointed at the all
        // endpoint sends).
        "/api/frontend/client/metrics"
        | "/api/proxy/client/metrics"
        | "/api/frontend/all/client/metrics"
        | "/api/proxy/all/client/metrics" => Route::FrontendMetrics,
        "/api/frontend/client/register"
        | "/api/proxy/client/register"
        | "/api/frontend/all/client/register"
        | "/api/proxy/all/client/register" => Route::FrontendRegister,
        _ => {
            let (route, raw) = if let Some(n) = path.strip_prefix("/api/client/features/") {
                (Route::ClientFeature, n)
            } else if let Some(n) = path
                .strip_prefix("/api/frontend/features/")
                .or_else(|| path.strip_prefix("/api/proxy/features/"))
            {
                (Route::FrontendFeature, n)
            } else {
                return Err(RouteError::NotFound);
            };
            if raw.is_empty() || raw.contains('/') {
                return Err(RouteError::NotFound);
            }
            name = Some(decode_segment(raw).ok_or(RouteError::BadPath)?);
            route
        }
    };
    if !route.accepts(method) {
        return Err(RouteError::MethodNotAllowed(route));
    }
    Ok(Matched { route, name })
}

/// Percent-decodes one path segment (`+` stays `+` in paths).
fn decode_segment(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_string());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(method: Method, path: &str) -> Result<(Route, Option<String>), RouteError> {
        route(&method, path).map(|m| (m.route, m.name))
    }

    #[test]
    fn matches_every_route_and_alias() {
        assert_eq!(
            r(Method::GET, "/api/client/features"),
            Ok((Route::ClientFeatures, None))
        );
        assert_eq!(
            r(Method::GET, "/api/client/features/"),
            Ok((Route::ClientFeatures, None))
        );
        assert_eq!(
            r(Method::GET, "/api/client/features/a.b"),
            Ok((Route::ClientFeature, Some("a.b".into())))
        );
        assert_eq!(
            r(Method::GET, "/api/frontend/features/%C3%A6%C3%B8%C3%A5"),
            Ok((Route::FrontendFeature, Some("æøå".into())))
        );
        assert_eq!(
            r(Method::POST, "/api/client/features"),
            Ok((Route::ClientFeatures, None))
        );
        assert_eq!(r(Method::POST, "/api/proxy"), Ok((Route::Frontend, None)));
        assert_eq!(
            r(Method::GET, "/api/proxy/all"),
            Ok((Route::FrontendAll, None))
        );
        assert_eq!(
            r(Method::OPTIONS, "/api/frontend"),
            Ok((Route::Frontend, None))
        );
        assert_eq!(
            r(Method::GET, "/internal-backstage/ready"),
            Ok((Route::Ready, None))
        );
        assert_eq!(r(Method::HEAD, "/health"), Ok((Route::Health, None)));
        assert_eq!(r(Method::GET, "/metrics"), Ok((Route::Metrics, None)));
        assert_eq!(
            r(Method::POST, "/api/client/metrics/bulk"),
            Ok((Route::ClientBulkMetrics, None))
        );
        assert_eq!(
            r(Method::POST, "/api/proxy/client/metrics"),
            Ok((Route::FrontendMetrics, None))
        );
        assert_eq!(
            r(Method::OPTIONS, "/api/frontend/client/register"),
            Ok((Route::FrontendRegister, None))
        );
        for prefix in ["/api/frontend/all", "/api/proxy/all"] {
            assert_eq!(
                r(Method::POST, &format!("{prefix}/client/metrics")),
                Ok((Route::FrontendMetrics, None))
            );
            assert_eq!(
                r(Method::POST, &format!("{prefix}/client/register")),
                Ok((Route::FrontendRegister, None))
            );
        }
        assert_eq!(
            r(Method::GET, "/api/client/metrics"),
            Err(RouteError::MethodNotAllowed(Route::ClientMetrics))
        );
    }

    #[test]
    fn refuses_the_rest() {
        assert_eq!(
            r(Method::GET, "/api/client/nope"),
            Err(RouteError::NotFound)
        );
        assert_eq!(r(Method::GET, "/api/frontendx"), Err(RouteError::NotFound));
        assert_eq!(r(Method::GET, "/x/api/frontend"), Err(RouteError::NotFound));
        assert_eq!(
            r(Method::GET, "/api/client/features/a/b"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            r(Method::PUT, "/api/client/features"),
            Err(RouteError::MethodNotAllowed(Route::ClientFeatures))
        );
        assert_eq!(
            r(Method::POST, "/api/client/features/a"),
            Err(RouteError::MethodNotAllowed(Route::ClientFeature))
        );
        assert_eq!(
            r(Method::DELETE, "/api/frontend"),
            Err(RouteError::MethodNotAllowed(Route::Frontend))
        );
        assert_eq!(
            r(Method::GET, "/api/client/features/%ff"),
            Err(RouteError::BadPath)
        );
    }

    #[test]
    fn labels_line_up_with_routes() {
        use Route::*;
        let all = [
            ClientFeatures,
            ClientFeature,
            Frontend,
            FrontendAll,
            FrontendFeature,
            Health,
            Ready,
            Metrics,
            EdgeValidate,
            ClientMetrics,
            ClientRegister,
            ClientBulkMetrics,
            FrontendMetrics,
            FrontendRegister,
            ClientStreaming,
            ClientDelta,
            Explain,
            BackstageTokens,
            BackstageFeatures,
            BackstageMetricsBatch,
            BackstageInstanceData,
            ClientEdgeMetrics,
        ];
        assert_eq!(
            ROUTE_LABELS.len(),
            all.len() + 1,
            "one label per route and unmatched"
        );
        for (i, r) in all.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            // Each label, as a path, is routed back to its own route.
            let path = ROUTE_LABELS[r.index()].replace("{name}", "some.flag");
            let method = Method::from_bytes(r.allowed().split(", ").next().unwrap().as_bytes());
            let matched = route(&method.unwrap(), &path).unwrap();
            assert_eq!(matched.route, r, "label {path}");
        }
        assert_eq!(ROUTE_LABELS[Unmatched.index()], "unmatched");
        assert_eq!(route(&Method::GET, "unmatched"), Err(RouteError::NotFound));
    }

    proptest! {
        #[test]
        fn router_never_panics(path in "/\\PC{0,60}") {
            let _ = route(&Method::GET, &path);
        }
    }
}
