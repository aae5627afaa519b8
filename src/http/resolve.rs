//! Name resolution for the HTTP agent: IP literals are answered without a
//! lookup, and `VAULT_TLS_SERVER_NAME` maps back to the configured host.

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Answers IP literals itself and hands only names to the system resolver:
/// ureq's resolver runs every lookup with a timeout on a thread of its own,
/// which an address like `127.0.0.1` or `[::1]` does not need. With
/// `VAULT_TLS_SERVER_NAME`, that name resolves to the configured host.
#[derive(Debug)]
pub(super) struct LiteralResolver {
    /// (TLS server name, configured host).
    pub(super) rename: Option<(String, String)>,
    pub(super) inner: DefaultResolver,
}

impl Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let host = match &self.rename {
            // An IPv6 name comes back in brackets.
            Some((name, real_host))
                if host.trim_start_matches('[').trim_end_matches(']') == name =>
            {
                real_host.as_str()
            }
            _ => host,
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(std::net::SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        if host == uri.host().unwrap_or_default() {
            return self.inner.resolve(uri, config, timeout);
        }
        let scheme = uri.scheme_str().unwrap_or("https");
        let real: Uri = format!("{scheme}://{host}:{port}/")
            .parse()
            .map_err(|_| ureq::Error::BadUri(host.to_string()))?;
        self.inner.resolve(&real, config, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_resolve_without_a_lookup() {
        let resolve = |rename: Option<(&str, &str)>, uri: &str| {
            let resolver = LiteralResolver {
                rename: rename.map(|(n, h)| (n.to_string(), h.to_string())),
                inner: DefaultResolver::default(),
            };
            let config = ureq::config::Config::default();
            let uri: Uri = uri.parse().unwrap();
            resolver
                .resolve(&uri, &config, NextTimeout::default())
                .unwrap()
                .to_vec()
        };
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            resolve(None, "http://127.0.0.1:8200/v1"),
            vec![addr("127.0.0.1:8200")]
        );
        assert_eq!(resolve(None, "https://[::1]/"), vec![addr("[::1]:443")]);
        assert_eq!(resolve(None, "http://10.1.2.3/"), vec![addr("10.1.2.3:80")]);
        // VAULT_TLS_SERVER_NAME: the name maps to the configured host.
        assert_eq!(
            resolve(
                Some(("vault.test", "127.0.0.1")),
                "https://vault.test:8201/"
            ),
            vec![addr("127.0.0.1:8201")]
        );
    }
}
