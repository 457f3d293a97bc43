//! A `postgres://` store URL, checked: what tokio-postgres connects with, and our own
//! parameters (`schema`, `pool_size`, `listen`, `poll_interval`, the TLS mode), with a display
//! form that never shows the password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How the connection is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode` absent or `disable`: plain TCP (or a Unix socket).
    Off,
    /// `sslmode=require` / `verify-ca` / `verify-full`: TLS, the server's certificate checked
    /// against `sslrootcert` (a PEM file) if given, else the platform's roots. Unlike libpq's
    /// `require`, the certificate is always verified.
    On { root_cert: Option<PathBuf> },
}

/// A checked PostgreSQL store location.
#[derive(Clone)]
pub struct PgConfig {
    /// What tokio-postgres parses: the URL without our own parameters.
    pub(super) connect: tokio_postgres::Config,
    /// The schema every table lives in (created if missing).
    pub schema: String,
    pub tls: Tls,
    /// Connections of the pool (the listener is one more).
    pub pool_size: usize,
    /// LISTEN/NOTIFY wakeups (`listen=false`: poll-only, for PgBouncer in transaction mode).
    pub listen: bool,
    /// How often a waiting subscriber re-queries without a notification: the fallback when
    /// listening, the only source of wakeups when not.
    pub poll_interval: Duration,
    /// The URL with the password replaced, for logs and errors.
    redacted: String,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

pub const DEFAULT_SCHEMA: &str = "mcp_workers";
pub const DEFAULT_POOL_SIZE: usize = 8;
const POLL_WHEN_LISTENING: Duration = Duration::from_secs(2);
const POLL_WHEN_NOT: Duration = Duration::from_millis(100);

/// Whether `s` names a PostgreSQL store.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgConfig {
    /// Parses `postgres://user:password@host:port/db?sslmode=...&schema=...`. `schema`, when
    /// given, overrides the URL's. Errors never contain the password.
    pub fn parse(url: &str, schema: Option<&str>) -> Result<Self, String> {
        let redacted = redact(url);
        if !is_postgres_url(url) {
            return Err(format!("`{redacted}` is not a postgres:// URL"));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut passed = Vec::new();
        let mut ours = Ours::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !ours.take(key, value).map_err(|e| format!("store URL `{redacted}`: {e}"))? {
                passed.push(pair);
            }
        }
        let mut rebuilt = base.to_owned();
        if !passed.is_empty() {
            rebuilt.push('?');
            rebuilt.push_str(&passed.join("&"));
        }
        let mut connect: tokio_postgres::Config =
            rebuilt.parse().map_err(|e| format!("store URL `{redacted}` is not valid: {}", scrub(&e, url)))?;
        if connect.get_application_name().is_none() {
            connect.application_name("mcp-workers");
        }
        if connect.get_connect_timeout().is_none() {
            connect.connect_timeout(Duration::from_secs(10));
        }
        let schema = schema.map(str::to_owned).or(ours.schema).unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_schema(&schema)?;
        let tls = match ours.sslmode.as_deref() {
            None | Some("disable") => Tls::Off,
            Some("require" | "verify-ca" | "verify-full") => Tls::On { root_cert: ours.root_cert },
            Some(other) => {
                return Err(format!(
                    "store URL `{redacted}`: sslmode={other} is not supported (use disable, require, verify-ca or verify-full)"
                ));
            }
        };
        connect.ssl_mode(match tls {
            Tls::Off => tokio_postgres::config::SslMode::Disable,
            Tls::On { .. } => tokio_postgres::config::SslMode::Require,
        });
        let poll_interval = ours.poll_interval.unwrap_or(if ours.listen { POLL_WHEN_LISTENING } else { POLL_WHEN_NOT });
        Ok(Self {
            connect,
            schema,
            tls,
            pool_size: ours.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            listen: ours.listen,
            poll_interval,
            redacted,
        })
    }
}

/// Our own query parameters (tokio-postgres refuses keys it does not know).
struct Ours {
    schema: Option<String>,
    sslmode: Option<String>,
    root_cert: Option<PathBuf>,
    pool_size: Option<usize>,
    listen: bool,
    poll_interval: Option<Duration>,
}

impl Default for Ours {
    fn default() -> Self {
        Self { schema: None, sslmode: None, root_cert: None, pool_size: None, listen: true, poll_interval: None }
    }
}

impl Ours {
    /// Takes `key=value` if it is ours (true), or leaves it for tokio-postgres (false).
    fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "schema" => self.schema = Some(value.to_owned()),
            "sslmode" => self.sslmode = Some(value.to_owned()),
            "sslrootcert" => self.root_cert = Some(PathBuf::from(percent_decode(value))),
            "pool_size" => {
                let n: usize = value.parse().map_err(|_| format!("pool_size={value} is not a number"))?;
                if !(1..=64).contains(&n) {
                    return Err(format!("pool_size={value} must be between 1 and 64"));
                }
                self.pool_size = Some(n);
            }
            "listen" => {
                self.listen = match value {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    _ => return Err(format!("listen={value} must be true or false")),
                }
            }
            "poll_interval" => {
                let d = crate::args::parse_positive_duration(value)?;
                self.poll_interval = Some(d);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A schema name we put into SQL unquoted: lower-case letters, digits and `_`, not starting
/// with a digit, at most 63 bytes.
pub fn check_schema(schema: &str) -> Result<(), String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{schema}` is not a usable schema name (lower-case letters, digits and _, not starting with a digit, at most 63)"
        ))
    }
}

/// The URL with the password (in the user part or a `password=` parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => format!("{scheme}://{userinfo}@{host}{path}"),
                },
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// An error's text with anything of the URL's password removed (belt and braces: the
/// driver's errors do not quote the URL today).
pub fn scrub(err: &dyn fmt::Display, url: &str) -> String {
    scrub_password(&err.to_string(), password_of(url).as_deref())
}

/// `text` with `password` (if any, and not empty) replaced by `***`.
pub fn scrub_password(text: &str, password: Option<&str>) -> String {
    match password {
        Some(password) if !password.is_empty() => text.replace(password, "***"),
        _ => text.to_owned(),
    }
}

impl PgConfig {
    /// An error's text with this URL's password removed.
    pub fn scrub(&self, err: &dyn fmt::Display) -> String {
        let password = self.connect.get_password().map(String::from_utf8_lossy);
        scrub_password(&err.to_string(), password.as_deref())
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(userinfo.split_once(':')?.1.to_owned())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_and_the_rest_passed_on() {
        let c = PgConfig::parse(
            "postgres://u:s3cret@db.example:6543/app?schema=q1&pool_size=3&listen=false&application_name=x",
            None,
        )
        .unwrap();
        assert_eq!((c.schema.as_str(), c.pool_size, c.listen, c.tls.clone()), ("q1", 3, false, Tls::Off));
        assert_eq!(c.poll_interval, POLL_WHEN_NOT);
        assert_eq!(c.connect.get_dbname(), Some("app"));
        assert_eq!(c.connect.get_application_name(), Some("x"));
        assert_eq!(c.connect.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            c.to_string(),
            "postgres://u:***@db.example:6543/app?schema=q1&pool_size=3&listen=false&application_name=x"
        );
        assert_eq!(format!("{c:?}"), c.to_string());
        let flag = PgConfig::parse("postgresql://localhost/test?schema=a", Some("b")).unwrap();
        assert_eq!((flag.schema.as_str(), flag.pool_size, flag.listen), ("b", DEFAULT_POOL_SIZE, true));
    }

    #[test]
    fn tls_modes() {
        let tls = |q: &str| PgConfig::parse(&format!("postgres://h/d?{q}"), None).map(|c| c.tls);
        assert_eq!(tls(""), Ok(Tls::Off));
        assert_eq!(tls("sslmode=disable"), Ok(Tls::Off));
        assert_eq!(tls("sslmode=require"), Ok(Tls::On { root_cert: None }));
        assert_eq!(
            tls("sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"),
            Ok(Tls::On { root_cert: Some("/etc/ca.pem".into()) })
        );
        assert!(tls("sslmode=prefer").unwrap_err().contains("not supported"));
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for (url, says) in [
            ("postgres://u:hunter2@h/d?schema=Bad-Name", "schema name"),
            ("postgres://u:hunter2@h/d?pool_size=0", "pool_size"),
            ("postgres://u:hunter2@h/d?listen=maybe", "listen"),
            ("postgres://u:hunter2@h:notaport/d", "not valid"),
            ("mysql://u:hunter2@h/d", "not a postgres"),
        ] {
            let err = PgConfig::parse(url, None).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("postgres://u:p@w@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://h/d?password=x&a=b"), "postgres://h/d?password=***&a=b");
        assert_eq!(scrub(&"auth failed for pw", "postgres://u:pw@h/d"), "auth failed for ***");
    }
}
