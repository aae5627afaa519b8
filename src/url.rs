//! Addresses from the environment (`VAULT_ADDR`, proxies, the API server's
//! host): parsed completely and refused when invalid, printed without their
//! password, and Go's `NO_PROXY` rules
//! (`golang.org/x/net/http/httpproxy`, used by Vault's Go client and so by
//! the Go images); `unix://` socket addresses; API paths percent-encoded.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What Go's `url.URL.Redacted` puts in place of a password.
const REDACTED: &str = "xxxxx";

/// `scheme://[user[:password]@]host[:port][/path]`, no query, no fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// Lower case.
    pub scheme: String,
    /// `user[:password]` as written, if any.
    pub userinfo: Option<String>,
    /// Without brackets for IPv6 literals; lower case.
    pub host: String,
    pub port: Option<u16>,
    /// Empty or starting with `/`, without a trailing slash.
    pub path: String,
}

impl Url {
    /// Parses `value` for one of `schemes`. The error says what is wrong
    /// without repeating a password.
    pub fn parse(value: &str, schemes: &[&str]) -> Result<Url, String> {
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| format!("no scheme, expected {}://", schemes.join(":// or ")))?;
        let scheme = scheme.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(format!(
                "unsupported scheme {scheme:?}, expected {}://",
                schemes.join(":// or ")
            ));
        }
        if rest.contains(['?', '#']) {
            return Err("a query (?) or fragment (#) has no meaning here".into());
        }
        if let Some(bad) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("contains the character {bad:?}"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(parse_port(p)?),
        };
        Ok(Url {
            scheme,
            userinfo,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The port, or the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }

    /// The host as it appears in a URL: IPv6 literals in brackets.
    pub fn url_host(&self) -> String {
        url_host(&self.host)
    }

    /// The full address, password included: for the HTTP client only.
    pub fn expose(&self) -> String {
        self.render(self.userinfo.as_deref())
    }

    fn render(&self, userinfo: Option<&str>) -> String {
        let mut s = format!("{}://", self.scheme);
        if let Some(u) = userinfo {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.url_host());
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push_str(&self.path);
        s
    }
}

/// Printing a `Url` hides its password, as Go's `Redacted`.
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(self.userinfo.as_deref().map(redact_userinfo).as_deref()))
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

fn redact_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => userinfo.to_string(),
    }
}

/// `host` with brackets when it is an IPv6 literal.
pub fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Any text that may hold a URL (a configuration value, even a malformed
/// one), with the password of every `user:password@` part replaced. The
/// user information reaches to the last `@` before the next URL: a password
/// with a `/`, `#` or space in it is still hidden.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Without a scheme, the value may start with `user:password@`.
    let mut rest = match text.find("://") {
        Some(i) if text[..i].contains('@') => text,
        Some(i) => {
            out.push_str(&text[..i + 3]);
            &text[i + 3..]
        }
        None => text,
    };
    loop {
        let end = rest.find("://").unwrap_or(rest.len());
        let segment = &rest[..end];
        match segment.rsplit_once('@') {
            Some((userinfo, after)) => {
                out.push_str(&redact_userinfo(userinfo));
                out.push('@');
                out.push_str(after);
            }
            None => out.push_str(segment),
        }
        if end == rest.len() {
            return out;
        }
        out.push_str("://");
        rest = &rest[end + 3..];
    }
}

/// `host[:port]` or `[v6][:port]` into the host (no brackets) and the port text.
fn split_host_port(s: &str) -> Result<(String, Option<&str>), String> {
    if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address must end with ]")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address [{addr}]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        return Ok((addr.to_ascii_lowercase(), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if !is_host_name(host) {
        return Err(if host.is_empty() {
            "no host".to_string()
        } else if s.matches(':').count() > 1 {
            "an IPv6 address must be written in brackets, e.g. [::1]".to_string()
        } else {
            format!("invalid host {host:?}")
        });
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {p:?}"));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("port {p} out of range 1-65535")),
    }
}

/// A DNS name or IPv4 address: letters, digits, `-`, `_`, `.`, at most 253.
pub fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !h.starts_with('.')
        && !h.contains("..")
}

/// A host given without a port (`KUBERNETES_SERVICE_HOST`,
/// `VAULT_TLS_SERVER_NAME`): a name, an IPv4 address, or an IPv6 address
/// with or without brackets. Returns it without brackets, lower case.
pub fn parse_bare_host(v: &str) -> Result<String, String> {
    let inner = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(v);
    if inner.contains(':') {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| inner.to_ascii_lowercase())
            .map_err(|_| format!("invalid IPv6 address {v:?}"));
    }
    if is_host_name(inner) && inner.len() == v.len() {
        Ok(inner.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid host {v:?}, expected a DNS name or an IP address"
        ))
    }
}

/// Whether Go's proxy rules send a request to `host:port` directly:
/// `localhost` and loopback addresses always; otherwise when a `NO_PROXY`
/// entry matches: `*`; an IP address or CIDR range (`10.0.0.0/8`,
/// `fd00::/8`) for IP hosts; a name for itself and its sub-domains, a
/// `.name` or `*.name` for sub-domains only; any of these with `:port`
/// (IP and name entries) for that port only. Case-insensitive.
pub fn bypasses_proxy(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    no_proxy.split(',').any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = parse_cidr(&entry) {
            return ip.is_some_and(|ip| in_cidr(ip, net, bits));
        }
        let (phost, pport) = match go_split_host_port(&entry) {
            Some((h, p)) => (h, Some(p)),
            None => (entry.as_str(), None),
        };
        let port_ok = pport.is_none_or(|p| p == port.to_string());
        if let Ok(pip) = phost.parse::<IpAddr>() {
            return ip == Some(pip) && port_ok;
        }
        if phost.is_empty() || ip.is_some() {
            return false;
        }
        let phost = phost
            .strip_prefix('*')
            .filter(|s| s.starts_with('.'))
            .unwrap_or(phost);
        let matched = match phost.strip_prefix('.') {
            Some(_) => host.ends_with(phost),
            None => host == phost || host.ends_with(&format!(".{phost}")),
        };
        matched && port_ok
    })
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`; `None` without a port.
fn go_split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return Some((h, after.strip_prefix(':')?));
    }
    let (h, p) = s.rsplit_once(':')?;
    (!h.contains(':')).then_some((h, p))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    // Go compares IPv4-mapped IPv6 addresses as IPv4.
    let v4 = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    match (v4(ip), v4(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The socket path of a `unix://` address (`VAULT_ADDR=unix:///path/to.sock`),
/// if it is one.
pub fn socket_path(addr: &str) -> Option<&str> {
    addr.strip_prefix("unix://").filter(|p| !p.is_empty())
}

/// Bytes left as they are in a path: RFC 3986's unreserved characters and
/// the `/` between segments; everything else is percent-encoded.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes each segment of a Vault path, keeping the slashes.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH_KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[&str] = &["http", "https"];

    #[test]
    fn parses_and_refuses_addresses() {
        let u = Url::parse("https://Vault.Example:8200/prefix/", WEB).unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("vault.example", Some(8200), "/prefix")
        );
        let u = Url::parse("http://[::1]:8200", WEB).unwrap();
        assert_eq!((u.host.as_str(), u.url_host().as_str()), ("::1", "[::1]"));
        assert_eq!(u.expose(), "http://[::1]:8200");
        for bad in [
            "http://host:99999",
            "http://host:0",
            "http://host:port",
            "http://host:8200?query#fragment",
            "http://host/#x",
            "http://[::1:80",
            "http://[::g]:80",
            "http://::1:80",
            "http://",
            "http://ho st",
            "http://{host}",
            "ftp://host",
            "host:8200",
        ] {
            assert!(Url::parse(bad, WEB).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let u = Url::parse("http://user:hunter2@proxy:3128", WEB).unwrap();
        assert_eq!(u.to_string(), "http://user:xxxxx@proxy:3128");
        assert_eq!(u.expose(), "http://user:hunter2@proxy:3128");
        assert!(!format!("{u:?}").contains("hunter2"));
        for (text, want) in [
            ("user:hunter2@proxy:99999", "user:xxxxx@proxy:99999"),
            (
                "GET http://a:hunter2@h:1/v1: x, https://b:hunter2@g/",
                "GET http://a:xxxxx@h:1/v1: x, https://b:xxxxx@g/",
            ),
            ("\"http://u:p@ss@h\"", "\"http://u:xxxxx@h\""),
            ("no url here", "no url here"),
        ] {
            assert_eq!(redact(text), want);
        }
    }

    #[test]
    fn bare_hosts() {
        assert_eq!(parse_bare_host("fd00::1").unwrap(), "fd00::1");
        assert_eq!(parse_bare_host("[fd00::1]").unwrap(), "fd00::1");
        assert_eq!(parse_bare_host("10.0.0.1").unwrap(), "10.0.0.1");
        for bad in ["a b", "{host}", "fd00::g", "[10.0.0.1", ""] {
            assert!(parse_bare_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_proxy_follows_go_rules() {
        let by = bypasses_proxy;
        // Loopback and localhost never use a proxy in Go.
        assert!(by("", "localhost", 80) && by("", "127.0.0.5", 80) && by("", "::1", 80));
        assert!(by("*", "vault", 443));
        assert!(by("10.0.0.0/8", "10.1.2.3", 443));
        assert!(!by("10.0.0.0/8", "11.1.2.3", 443));
        assert!(by("fd00::/8", "fd12::1", 443));
        assert!(by("192.168.1.1", "192.168.1.1", 443));
        assert!(by("192.168.1.1:443", "192.168.1.1", 443));
        assert!(!by("192.168.1.1:80", "192.168.1.1", 443));
        assert!(by("[fd00::1]:443", "fd00::1", 443));
        assert!(by("example.com", "example.com", 1));
        assert!(by("example.com", "vault.example.com", 1));
        assert!(!by("example.com", "badexample.com", 1));
        assert!(!by(".example.com", "example.com", 1));
        assert!(by(".example.com", "vault.example.com", 1));
        assert!(by("*.example.com", "vault.example.com", 1));
        assert!(by("Example.COM:8200", "vault.example.com", 8200));
        assert!(!by("example.com:8200", "vault.example.com", 8201));
        // Names never match IP hosts, and the other way round.
        assert!(!by("10.0.0.1", "vault", 1) && !by("vault", "10.0.0.1", 1));
        assert!(!by(" , ,", "vault", 1));
    }

    #[test]
    fn unix_addresses() {
        assert_eq!(
            socket_path("unix:///run/vault/agent.sock"),
            Some("/run/vault/agent.sock")
        );
        assert_eq!(socket_path("unix://"), None);
        assert_eq!(socket_path("http://127.0.0.1:8200"), None);
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("secret/a b/c?d"), "secret/a%20b/c%3Fd");
        // Unreserved characters stay; UTF-8 is encoded byte by byte, upper-case hex.
        assert_eq!(encode_path("k8s/A-z_0.9~"), "k8s/A-z_0.9~");
        assert_eq!(encode_path("é%+"), "%C3%A9%25%2B");
    }
}
