//! Property tests of every parser of the environment: for any value, a
//! setting or an error naming the variable, never a panic, and never a
//! password in the message. Each variable is driven alone with the others
//! valid, so the error must be about it. No server needed.
//!
//! Each property runs `CASES` generated inputs, a third shaped like the
//! variable's syntax so the deep branches are reached, a third arbitrary
//! Unicode, a third printable ASCII. About 10 s in a debug build.

use proptest::prelude::*;
use proptest::test_runner::Config;
use vault_kubernetes::config::{
    self, Env, KubeSettings, LoginSettings, RenewerConfig, SynchronizerConfig, TokenFileSettings,
    VaultSettings,
};
use vault_kubernetes::mapping;
use vault_kubernetes::url::{self, Url};

const CASES: u32 = 2000;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Shaped like the syntax, or anything.
fn values(shape: &str) -> BoxedStrategy<String> {
    prop_oneof![
        proptest::string::string_regex(shape).unwrap(),
        any::<String>(),
        "[ -~]{0,40}",
    ]
    .boxed()
}

const DURATION: &str =
    "[ +]?[0-9]{0,22}(\\.[0-9]{0,22})?(ns|us|µs|ms|s|m|h|x|)([0-9.]{0,12}(h|m|s|ms))?[ ]?";
const URL: &str = "(https?|HTTP|ftp|socks5)?(://)?([a-z]{0,4}(:[a-z0-9@]{0,6})?@)?(\\[[0-9a-fg:.%]{0,16}\\]?|[a-z0-9.{} _-]{0,14})(:[0-9+-]{0,7})?(/[a-z/?#%]{0,8})?";

/// The value is accepted, or refused by an error that starts with `var: `
/// and does not contain `secret`.
fn named<T>(var: &str, secret: Option<&str>, result: vault_kubernetes::Result<T>) {
    if let Err(e) = result {
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{var}: ")), "{var}: {msg}");
        if let Some(s) = secret.filter(|s| s.len() >= 3) {
            assert!(!msg.contains(s), "{var} leaks {s:?}: {msg}");
        }
        assert!(!msg.contains('\n'), "{var}: multi-line error {msg:?}");
    }
}

fn vault_env<'a>(var: &'a str, value: &'a str) -> Env {
    let mut pairs = vec![
        ("VAULT_ADDR", "https://vault.example:8200"),
        ("VAULT_TOKEN_PATH", "/t"),
        ("VAULT_ROLE", "r"),
    ];
    pairs.retain(|(k, _)| *k != var);
    pairs.push((var, value));
    Env::from_pairs(pairs)
}

/// The password of a `user:password@` part, to check it never shows.
fn password(v: &str) -> Option<&str> {
    let auth = v.split("://").nth(1).unwrap_or(v);
    let auth = auth.split(['/', '?', '#']).next()?;
    let (userinfo, _) = auth.rsplit_once('@')?;
    Some(userinfo.split_once(':')?.1)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations(v in values(DURATION)) {
        for var in ["VAULT_CLIENT_TIMEOUT", "LOGIN_TIMEOUT", "VAULT_TTL"] {
            let env = vault_env(var, &v);
            match var {
                "VAULT_CLIENT_TIMEOUT" => named(var, None, VaultSettings::from_env(&env)),
                "LOGIN_TIMEOUT" => named(var, None, LoginSettings::from_env(&env)),
                _ => named(var, None, RenewerConfig::from_env(&env)),
            }
        }
        if let Ok(d) = config::parse_duration(v.trim()) {
            prop_assert!(d <= config::MAX_DURATION);
        }
    }

    #[test]
    fn booleans(v in values("[ ]?(1|0|t|f|T|F|true|false|TRUE|FALSE|True|False|yes|on)[ ]?")) {
        for var in ["VAULT_SKIP_VERIFY", "ALLOW_FAIL", "VAULT_REAUTH", "VAULT_REVOKE_ON_SHUTDOWN"] {
            let env = vault_env(var, &v);
            match var {
                "VAULT_SKIP_VERIFY" => named(var, None, VaultSettings::from_env(&env)),
                "ALLOW_FAIL" => named(var, None, config::AuthenticatorConfig::from_env(&env)),
                _ => named(var, None, RenewerConfig::from_env(&env)),
            }
        }
    }

    #[test]
    fn vault_addresses(v in values(URL)) {
        let env = vault_env("VAULT_ADDR", &v);
        named("VAULT_ADDR", password(&v), VaultSettings::from_env(&env));
        if let Ok(s) = VaultSettings::from_env(&env) {
            // What is accepted is a whole URL the HTTP layer can parse.
            prop_assert!(s.addr.parse::<ureq::http::Uri>().is_ok(), "{}", s.addr);
        }
    }

    #[test]
    fn proxies_and_no_proxy(
        proxy in values(URL),
        no_proxy in values("([a-z0-9.*:/\\[\\]]{0,12},?){0,4}"),
        host in values("[a-z0-9.:]{0,16}"),
        port: u16,
    ) {
        for var in ["VAULT_HTTP_PROXY", "HTTPS_PROXY"] {
            let env = Env::from_pairs([
                ("VAULT_ADDR", "https://vault.example:8200"),
                (var, proxy.as_str()),
                ("NO_PROXY", no_proxy.as_str()),
            ]);
            named(var, password(&proxy), VaultSettings::from_env(&env));
        }
        let _ = url::bypasses_proxy(&no_proxy, &host, port);
        let _ = url::redact(&proxy);
        if let Ok(u) = Url::parse(&proxy, &["http", "https"]) {
            prop_assert!(u.expose().parse::<ureq::http::Uri>().is_ok());
            if let Some(p) = password(&proxy).filter(|p| p.len() >= 3) {
                prop_assert!(!u.to_string().contains(p));
            }
        }
    }

    #[test]
    fn kubernetes_host_and_port(
        host in values("\\[?[0-9a-f:.]{0,12}\\]?|[a-z0-9.{} -]{0,12}"),
        port in values("[0-9+ -]{0,7}"),
    ) {
        let env = Env::from_pairs([
            ("KUBERNETES_SERVICE_HOST", host.as_str()),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("POD_NAMESPACE", "ns"),
        ]);
        named("KUBERNETES_SERVICE_HOST", None, KubeSettings::from_env(&env));
        if let Ok(k) = KubeSettings::from_env(&env) {
            prop_assert!(k.base_url.parse::<ureq::http::Uri>().is_ok(), "{}", k.base_url);
        }
        let env = Env::from_pairs([
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
            ("POD_NAMESPACE", "ns"),
        ]);
        named("KUBERNETES_SERVICE_PORT", None, KubeSettings::from_env(&env));
        let env = Env::from_pairs([
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("POD_NAMESPACE", host.as_str()),
        ]);
        named("POD_NAMESPACE", None, KubeSettings::from_env(&env));
    }

    #[test]
    fn secrets_mapping(v in values("([ /]?[a-z]{0,4}(/[a-z.]{0,3}){0,3}/?(:[a-z_-]{0,4})?[ ]?,?){0,4}")) {
        let prefix = "p-";
        let env = |var, value| {
            Env::from_pairs([
                ("VAULT_SECRETS", if var == "VAULT_SECRETS" { value } else { "secret/a" }),
                ("SECRET_PREFIX", if var == "SECRET_PREFIX" { value } else { prefix }),
                ("VAULT_TOKEN_PATH", "/t"),
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("POD_NAMESPACE", "ns"),
            ])
        };
        named("VAULT_SECRETS", None, SynchronizerConfig::from_env(&env("VAULT_SECRETS", &v)));
        named("SECRET_PREFIX", None, SynchronizerConfig::from_env(&env("SECRET_PREFIX", &v)));
        let _ = mapping::parse_entries(&v, prefix);
    }

    #[test]
    fn labels_and_annotation(v in values("([ ]?[a-zA-Z0-9./_-]{0,8}(=[a-zA-Z0-9._ -]{0,8})?,?){0,4}")) {
        for var in ["SYNCHRONIZER_LABELS", "SYNCHRONIZER_ANNOTATION", "SYNCHRONIZER_PRUNE", "SYNC_INTERVAL"] {
            let env = Env::from_pairs([
                ("VAULT_SECRETS", "secret/a"),
                ("VAULT_TOKEN_PATH", "/t"),
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("POD_NAMESPACE", "ns"),
                (var, v.as_str()),
            ]);
            named(var, None, SynchronizerConfig::from_env(&env));
        }
    }

    #[test]
    fn headers(v in values("\\{(\"[A-Za-z-]{0,9}\":(\"[a-z]{0,4}\"|[0-9]|null|\\[\\]),?){0,3}\\}")) {
        named("VAULT_HEADERS", None, VaultSettings::from_env(&vault_env("VAULT_HEADERS", &v)));
    }

    #[test]
    fn token_file_mode_and_owner(
        mode in values("(0o)?[0-9+-]{0,6}"),
        owner in values("[0-9]{0,11}(:[0-9]{0,11})?"),
    ) {
        named("VAULT_TOKEN_FILE_MODE", None,
            TokenFileSettings::from_env(&vault_env("VAULT_TOKEN_FILE_MODE", &mode)));
        named("VAULT_TOKEN_FILE_OWNER", None,
            TokenFileSettings::from_env(&vault_env("VAULT_TOKEN_FILE_OWNER", &owner)));
        if let Ok(t) = TokenFileSettings::from_env(&vault_env("VAULT_TOKEN_FILE_MODE", &mode)) {
            prop_assert!(t.mode <= 0o777);
        }
    }

    #[test]
    fn login_settings(
        v in values("[ /]?(auth/)?[a-z./]{0,10}[ ]?"),
        secret in "[a-zA-Z0-9]{3,12}",
    ) {
        named("VAULT_AUTH_MOUNT_PATH", None,
            LoginSettings::from_env(&vault_env("VAULT_AUTH_MOUNT_PATH", &v)));
        named("VAULT_TLS_SERVER_NAME", None,
            VaultSettings::from_env(&vault_env("VAULT_TLS_SERVER_NAME", &v)));
        named("VAULT_MAX_RETRIES", None,
            VaultSettings::from_env(&vault_env("VAULT_MAX_RETRIES", &v)));
        named("LOG_FORMAT", None, config::log_format(&vault_env("LOG_FORMAT", &v)));
        // AppRole: the secret id never appears, whatever else is wrong.
        let env = Env::from_pairs([
            ("VAULT_ROLE_ID", "role"),
            ("VAULT_SECRET_ID", secret.as_str()),
            ("VAULT_AUTH_MOUNT_PATH", v.as_str()),
        ]);
        named("VAULT_AUTH_MOUNT_PATH", Some(&secret), LoginSettings::from_env(&env));
        if let Ok(l) = LoginSettings::from_env(&env) {
            let shown = format!("{:?}", l);
            prop_assert!(!shown.contains(&secret));
        }
    }
}
