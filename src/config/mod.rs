//! Configuration from the environment: the only module that reads
//! `std::env` ([`Env`]). Everything is parsed and checked here, before any
//! I/O, into typed settings; a bad value becomes an error naming the
//! variable (and the value, unless it is a secret). One file per group of
//! settings: [`vault`] and [`login`] are shared, the others belong to one
//! program each.
//!
//! Names, defaults and syntax (Go booleans and durations) are those of the
//! Go tools, so manifests keep working when the image is swapped.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

pub mod authenticator;
pub mod env;
pub mod events;
pub mod kube;
pub mod login;
pub mod renewer;
pub mod synchronizer;
pub mod vault;

pub use self::authenticator::AuthenticatorConfig;
pub use self::env::{EnvConfig, ExecConfig};
pub use self::events::EventSettings;
pub use self::kube::KubeSettings;
pub use self::login::{normalize_mount, LoginMethod, LoginSettings, TokenFileSettings};
pub use self::renewer::RenewerConfig;
pub use self::synchronizer::{
    FilesSettings, SyncTarget, SynchronizerConfig, DEFAULT_ANNOTATION, MAX_ID_LEN,
};
pub use self::vault::{
    parse_rate_limit, RateLimit, TlsSettings, VaultSettings, DEFAULT_VAULT_ADDR,
};
/// Kept here too: settings and their users named it `config::Secret`.
pub use crate::secret::Secret;

pub const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A snapshot of the environment. Empty values count as unset, as
/// `os.Getenv(...) != ""` did in the Go tools, and so do values of only
/// whitespace (a `VAULT_ROLE="   "` is a missing role, not an empty one).
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// Every variable as the process got it, in order, the non-UTF-8 ones
    /// too: what the env wrapper hands on to the app.
    raw: Vec<(OsString, OsString)>,
}

impl Env {
    // The one place the environment is read (clippy.toml forbids it elsewhere).
    #[allow(clippy::disallowed_methods)]
    pub fn from_process() -> Self {
        Env::from_raw(std::env::vars_os().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env::from_raw(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    fn from_raw(raw: Vec<(OsString, OsString)>) -> Self {
        let vars = raw
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
            .collect();
        Env { vars, raw }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// Every variable, in the order the process got them, values as they
    /// are (not trimmed, empty ones included).
    pub fn raw(&self) -> &[(OsString, OsString)] {
        &self.raw
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_string())
    }

    fn required(&self, name: &str) -> Result<String> {
        self.string(name)
            .ok_or_else(|| Error::config(name, "missing, it is required"))
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool> {
        self.get(name).map_or(Ok(default), |v| {
            parse_bool(v.trim()).ok_or_else(|| {
                Error::config(
                    name,
                    format!("invalid boolean {v:?}, expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"),
                )
            })
        })
    }

    fn duration(&self, name: &str, default: Duration) -> Result<Duration> {
        self.get(name).map_or(Ok(default), |v| {
            parse_duration(v.trim()).map_err(|e| Error::config(name, e))
        })
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The longest duration Go can represent (`math.MaxInt64` nanoseconds,
/// about 292 years): the bound of every duration variable, with or without
/// a unit, so no deadline computed from one can overflow.
pub const MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// Go's `time.ParseDuration` (`1h30m`, `1.5h`, `300ms`), plus a bare number
/// of seconds (`30`) as Vault's own parser accepts. Negative is refused, and
/// so is anything above [`MAX_DURATION`], as Go refuses it.
pub fn parse_duration(v: &str) -> std::result::Result<Duration, String> {
    let bad =
        || format!("invalid duration {v:?}, expected e.g. 30s, 5m, 1h30m or a number of seconds");
    let too_long = || format!("duration {v:?} too long, at most 2562047h47m16s");
    if v.is_empty() {
        return Err(bad());
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return match v.parse::<u64>() {
            Ok(secs) if secs <= MAX_DURATION.as_secs() => Ok(Duration::from_secs(secs)),
            _ => Err(too_long()),
        };
    }
    // Whole nanoseconds in u128, as Go sums them in int64: exact, and no
    // input can overflow before the bound is checked.
    let mut rest = v.strip_prefix('+').unwrap_or(v);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (whole, frac) = rest[..num_len]
            .split_once('.')
            .unwrap_or((&rest[..num_len], ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        // More than 30 digits is past any bound; stop before u128 overflows.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 30 {
            return Err(too_long());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        // Fractions below a nanosecond are dropped, as Go does.
        let mut frac_ns: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac.bytes().take(18) {
            frac_ns = frac_ns * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = whole
            .checked_mul(unit)
            .and_then(|n| n.checked_add(frac_ns * unit / scale))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(too_long)?;
    }
    let max = MAX_DURATION.as_nanos();
    if total > max {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Octal permissions such as `0600` from `var`, at most `0777`.
fn file_mode(env: &Env, var: &str, default: u32) -> Result<u32> {
    match env.string(var) {
        None => Ok(default),
        Some(v) => Some(v.strip_prefix("0o").unwrap_or(&v))
            .filter(|m| !m.is_empty() && m.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                Error::config(
                    var,
                    format!("invalid mode {v:?}, expected octal permissions such as 0600 or 0640"),
                )
            }),
    }
}

/// `uid`, `uid:gid` or `:gid` from `var`; unset means keep the writer's.
fn file_owner(env: &Env, var: &str) -> Result<(Option<u32>, Option<u32>)> {
    match env.string(var) {
        None => Ok((None, None)),
        Some(v) => parse_owner(&v).ok_or_else(|| {
            Error::config(
                var,
                format!("invalid owner {v:?}, expected numeric uid, uid:gid or :gid"),
            )
        }),
    }
}

fn parse_owner(v: &str) -> Option<(Option<u32>, Option<u32>)> {
    let (u, g) = v.split_once(':').unwrap_or((v, ""));
    // u32::MAX is chown's "leave unchanged" (-1), not an owner.
    let num = |s: &str| -> Option<Option<u32>> {
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().filter(|n| *n != u32::MAX).map(Some)
        } else {
            None
        }
    };
    let (u, g) = (num(u)?, num(g)?);
    (u.is_some() || g.is_some()).then_some((u, g))
}

/// The kubelet's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// `TERMINATION_MESSAGE_PATH`: where a failing program leaves its final
/// error line (see [`crate::termination`]); the container's
/// `terminationMessagePath`, so it only needs setting when that is changed.
/// Defaults to `/dev/termination-log`. Read before anything else can fail,
/// so a configuration error lands there too.
pub fn termination_message_path(env: &Env) -> PathBuf {
    PathBuf::from(
        env.string("TERMINATION_MESSAGE_PATH")
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string()),
    )
}

/// `LOG_FORMAT`: `text` (the Go tools' lines, the default) or `json`.
pub fn log_format(env: &Env) -> Result<crate::log::Format> {
    match env.get("LOG_FORMAT").map(str::trim) {
        None | Some("text") => Ok(crate::log::Format::Text),
        Some("json") => Ok(crate::log::Format::Json),
        Some(v) => Err(Error::config(
            "LOG_FORMAT",
            format!("invalid format {v:?}, expected text or json"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_syntax() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in ["", "-5s", "5x", "h", "1h-3m", "abc", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_bounded_like_go() {
        // Go's largest duration, with a unit or as plain seconds.
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            MAX_DURATION
        );
        assert_eq!(
            parse_duration("9223372036").unwrap().as_secs(),
            9_223_372_036
        );
        for big in [
            "9223372037",
            "18446744073709551615",
            "9223372036854775808",
            "99999999999999999999999999",
            "2562048h",
            "1e300h",
        ] {
            assert!(parse_duration(big).is_err(), "{big}");
        }
        let env = Env::from_pairs([
            ("LOGIN_TIMEOUT", "18446744073709551615"),
            ("VAULT_ROLE", "r"),
        ]);
        let err = LoginSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("LOGIN_TIMEOUT: duration"), "{err}");
    }

    #[test]
    fn blank_values_are_unset() {
        let env = Env::from_pairs([("VAULT_ROLE", "   "), ("VAULT_TOKEN_PATH", " \t ")]);
        let err = LoginSettings::from_env(&env).unwrap_err().to_string();
        assert_eq!(err, "VAULT_ROLE: missing, it is required");
        let err = TokenFileSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_TOKEN_PATH: missing"), "{err}");
        let env = Env::from_pairs([("KUBERNETES_SERVICE_HOST", "  "), ("POD_NAMESPACE", "ns")]);
        let err = KubeSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("KUBERNETES_SERVICE_HOST: missing"), "{err}");
        // A blank optional value takes its default.
        let env = Env::from_pairs([("VAULT_ADDR", " "), ("VAULT_CLIENT_TIMEOUT", "  ")]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!(
            (v.addr.as_str(), v.timeout),
            (DEFAULT_VAULT_ADDR, Duration::from_secs(60))
        );
    }

    #[test]
    fn addresses_are_parsed_fully() {
        for bad in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:8200?query#fragment",
            "http://[::1:80",
            "http://vault:8200 x",
        ] {
            let env = Env::from_pairs([("VAULT_ADDR", bad)]);
            let err = VaultSettings::from_env(&env).unwrap_err().to_string();
            assert!(
                err.starts_with("VAULT_ADDR: invalid address"),
                "{bad}: {err}"
            );
        }
        let env = Env::from_pairs([("VAULT_ADDR", "http://user:hunter2@127.0.0.1:99999")]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("user:xxxxx@") && !err.contains("hunter2"),
            "{err}"
        );
        let env = Env::from_pairs([("VAULT_ADDR", "https://[::1]:8200/")]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().addr,
            "https://[::1]:8200"
        );
        for (host, port) in [
            ("a b", "443"),
            ("{host}", "443"),
            ("10.0.0.1", "0"),
            ("10.0.0.1", "+5"),
        ] {
            let env = Env::from_pairs([
                ("KUBERNETES_SERVICE_HOST", host),
                ("KUBERNETES_SERVICE_PORT", port),
                ("POD_NAMESPACE", "ns"),
            ]);
            let err = KubeSettings::from_env(&env).unwrap_err().to_string();
            assert!(
                err.starts_with("KUBERNETES_SERVICE_"),
                "{host} {port}: {err}"
            );
        }
        let env = Env::from_pairs([
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            ("POD_NAMESPACE", "ns"),
        ]);
        assert_eq!(
            KubeSettings::from_env(&env).unwrap().base_url,
            "https://[fd00::1]:6443"
        );
    }

    #[test]
    fn proxy_errors_hide_passwords() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.example:8200"),
            ("HTTPS_PROXY", "http://user:hunter2@proxy:99999"),
        ]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.starts_with("HTTPS_PROXY: invalid proxy address"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        // Go's rules: CIDR entries match, loopback never goes to a proxy.
        let env = Env::from_pairs([
            ("VAULT_ADDR", "http://10.1.2.3:8200"),
            ("HTTP_PROXY", "proxy:3128"),
            ("NO_PROXY", "10.0.0.0/8"),
        ]);
        assert_eq!(VaultSettings::from_env(&env).unwrap().proxy, None);
    }

    #[test]
    fn max_retries_take_go_parse_uint_syntax() {
        let retries = |v| VaultSettings::from_env(&Env::from_pairs([("VAULT_MAX_RETRIES", v)]));
        assert_eq!(retries(" 5 ").unwrap().max_retries, 5);
        for bad in ["+5", "-1", "4294967296", "5x"] {
            let err = retries(bad).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_MAX_RETRIES: "), "{bad}: {err}");
        }
    }

    #[test]
    fn vault_ttl_is_checked_at_start() {
        let env = |ttl| Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_TTL", ttl)]);
        let ok = RenewerConfig::from_env(&env("2562047h47m16s")).unwrap();
        assert_eq!(ok.ttl.as_secs(), 9_223_372_036);
        for bad in ["2562047h47m17s", "500ms", "18446744073709551615"] {
            let err = RenewerConfig::from_env(&env(bad)).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_TTL: "), "{bad}: {err}");
        }
    }

    #[test]
    fn booleans_follow_go_syntax() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn mounts_are_normalised_like_the_go_tool() {
        for m in [
            "kubernetes",
            "/kubernetes",
            "auth/kubernetes",
            "/kubernetes/",
            "/auth/kubernetes/",
        ] {
            assert_eq!(normalize_mount(m).as_deref(), Some("kubernetes"), "{m}");
        }
        assert_eq!(
            normalize_mount("auth/k8s/prod").as_deref(),
            Some("k8s/prod")
        );
        assert_eq!(normalize_mount("/"), None);
        assert_eq!(normalize_mount("auth/"), None);
    }

    #[test]
    fn bad_reauth_names_reauth_not_allow_fail() {
        let env = Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_REAUTH", "yes")]);
        let err = RenewerConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_REAUTH: "), "{err}");
    }

    #[test]
    fn approle_defaults_to_its_own_mount() {
        let env = Env::from_pairs([("VAULT_ROLE_ID", "r"), ("VAULT_SECRET_ID", "s")]);
        let login = LoginSettings::from_env(&env).unwrap();
        assert_eq!(login.mount, "approle");
        assert!(!format!("{login:?}").contains("\"s\""));
    }

    #[test]
    fn headers_refuse_vault_names() {
        let env = Env::from_pairs([("VAULT_HEADERS", r#"{"X-Vault-Token":"x"}"#)]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_HEADERS: "), "{err}");
        let env = Env::from_pairs([("VAULT_HEADERS", r#"{"X-Team":"a"}"#)]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().headers,
            vec![("X-Team".to_string(), "a".to_string())]
        );
    }

    #[test]
    fn proxy_respects_no_proxy() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.corp.example:8200"),
            ("HTTPS_PROXY", "proxy:3128"),
            ("NO_PROXY", "localhost,.example"),
        ]);
        assert_eq!(VaultSettings::from_env(&env).unwrap().proxy, None);
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.other:8200"),
            ("HTTPS_PROXY", "proxy:3128"),
            ("NO_PROXY", "localhost,.example"),
        ]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().proxy.as_deref(),
            Some("http://proxy:3128")
        );
    }

    #[test]
    fn agent_addr_overrides_vault_addr_and_unix_sockets_are_addresses() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.example:8200"),
            ("VAULT_AGENT_ADDR", "http://127.0.0.1:8100"),
        ]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().addr,
            "http://127.0.0.1:8100"
        );
        let env = Env::from_pairs([
            ("VAULT_AGENT_ADDR", "unix:///run/agent.sock"),
            ("HTTPS_PROXY", "proxy:3128"),
        ]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!((v.addr.as_str(), v.proxy), ("unix:///run/agent.sock", None));
        let env = Env::from_pairs([("VAULT_AGENT_ADDR", "ftp://x")]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_AGENT_ADDR: "), "{err}");
    }

    #[test]
    fn go_client_variables_are_supported_or_refused_by_name() {
        for var in ["VAULT_SRV_LOOKUP", "VAULT_WRAP_TTL", "VAULT_MFA"] {
            let env = Env::from_pairs([(var, "1")]);
            let err = VaultSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}: not supported: ")), "{err}");
        }
        let env = Env::from_pairs([("VAULT_TOKEN", "s.x")]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!(
            v.warnings,
            ["VAULT_TOKEN is set but not used: the token always comes from VAULT_TOKEN_PATH"]
        );
        let env = Env::from_pairs([("VAULT_DISABLE_REDIRECTS", "true")]);
        assert!(VaultSettings::from_env(&env).unwrap().disable_redirects);
    }

    #[test]
    fn rate_limits_parse_as_the_go_client() {
        let limit = |per_second, burst| RateLimit { per_second, burst };
        assert_eq!(parse_rate_limit("10"), Ok(limit(10.0, 10)));
        assert_eq!(parse_rate_limit("2.5:7"), Ok(limit(2.5, 7)));
        // Go's limiter refused every request with a burst of 0.
        assert_eq!(parse_rate_limit("0.5"), Ok(limit(0.5, 1)));
        for bad in ["", "0", "-1", "x", "1:x", "1:-2", "inf"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_file_mode_and_owner() {
        let env = Env::from_pairs([
            ("VAULT_TOKEN_PATH", "/t"),
            ("VAULT_TOKEN_FILE_MODE", "0640"),
            ("VAULT_TOKEN_FILE_OWNER", "1000:2000"),
        ]);
        let t = TokenFileSettings::from_env(&env).unwrap();
        assert_eq!((t.mode, t.uid, t.gid), (0o640, Some(1000), Some(2000)));
        let env = Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_TOKEN_FILE_MODE", "999")]);
        assert!(TokenFileSettings::from_env(&env).is_err());
    }

    #[test]
    fn file_target_needs_no_kubernetes_settings() {
        let env = Env::from_pairs([
            ("VAULT_TOKEN_PATH", "/t"),
            ("VAULT_SECRETS", "secret/a"),
            ("SYNCHRONIZER_TARGET_DIR", "/vault/secrets"),
        ]);
        let cfg = SynchronizerConfig::from_env(&env).unwrap();
        let SyncTarget::Files(files) = cfg.target else {
            panic!("file target expected")
        };
        assert_eq!((files.mode, files.uid, files.gid), (0o440, None, None));
        let env = Env::from_pairs([
            ("SYNCHRONIZER_TARGET_DIR", "/d"),
            ("SYNCHRONIZER_FILE_MODE", "0444"),
            ("SYNCHRONIZER_FILE_OWNER", ":2000"),
        ]);
        let files = FilesSettings::from_env(&env).unwrap().unwrap();
        assert_eq!(
            (files.mode, files.uid, files.gid),
            (0o444, None, Some(2000))
        );
        for (var, value) in [
            ("SYNCHRONIZER_TARGET_DIR", "relative"),
            ("SYNCHRONIZER_FILE_MODE", "1777"),
            ("SYNCHRONIZER_FILE_OWNER", "app"),
        ] {
            let env = Env::from_pairs([("SYNCHRONIZER_TARGET_DIR", "/d"), (var, value)]);
            let err = FilesSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}: ")), "{err}");
        }
    }
}
