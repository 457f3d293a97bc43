//! DNS-rebinding protection for every route: the `Host` header, and the `Origin` header when a
//! browser sends one, must name an allowed host (loopback names unless configured).

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::IntoResponse;

#[derive(Debug, Clone)]
pub struct HostGuard {
    hosts: Arc<Vec<String>>,
}

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `::1`, lower case.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    let name = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { authority })
    };
    name.to_ascii_lowercase()
}

impl HostGuard {
    pub fn loopback_and(extra: &[String]) -> Self {
        let mut hosts: Vec<String> = LOOPBACK.iter().map(|h| (*h).to_owned()).collect();
        hosts.extend(extra.iter().map(|h| host_name(h)));
        Self { hosts: Arc::new(hosts) }
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    fn allows(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| h == name)
    }

    /// Why a request must be refused, if it must.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
        let host =
            headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()));
        match host {
            Some(h) if self.allows(&host_name(h)) => {}
            Some(h) => return Err(format!("Host {h} is not allowed (use --allow-host)")),
            None => return Err("missing Host header".into()),
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let name = origin.parse::<Uri>().ok().and_then(|u| u.host().map(host_name));
            if !name.is_some_and(|n| self.allows(&n)) {
                return Err(format!("Origin {origin} is not allowed (use --allow-host)"));
            }
        }
        Ok(())
    }

    pub fn wrap(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let guard = self.clone();
            async move {
                match guard.check(req.uri(), req.headers()) {
                    Ok(()) => next.run(req).await,
                    Err(why) => {
                        tracing::warn!(reason = %why, "request refused");
                        (StatusCode::FORBIDDEN, why).into_response()
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn check(host: Option<&str>, origin: Option<&str>) -> bool {
        let guard = HostGuard::loopback_and(&["Example.com".into()]);
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        if let Some(o) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        guard.check(&Uri::from_static("/mcp"), &headers).is_ok()
    }

    #[test]
    fn hosts_and_origins() {
        assert!(check(Some("127.0.0.1:8787"), None));
        assert!(check(Some("localhost"), Some("http://localhost:3000")));
        assert!(check(Some("[::1]:8787"), None));
        assert!(check(Some("example.com:80"), Some("https://example.com")));
        assert!(!check(Some("evil.test:8787"), None));
        assert!(!check(Some("127.0.0.1:8787"), Some("http://evil.test")));
        assert!(!check(Some("127.0.0.1"), Some("null")));
        assert!(!check(None, None));
    }
}
