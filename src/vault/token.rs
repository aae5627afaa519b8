//! What a valid token is: the checks every token and TTL from Vault (or
//! from the token file) passes before it is used, stored or written.

use std::time::Duration;

/// Longest token accepted from Vault, in bytes. Service tokens are about
/// 100 bytes (`hvs.` + 24–90 characters), batch tokens a few hundred; 4 KiB
/// is far above both and still fits any server's header limit (Go's is 1 MiB,
/// but proxies often cut at 8 KiB).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest TTL or lease accepted from Vault: 10 years. Vault caps TTLs at
/// the mount's max lease TTL (32 days by default); anything longer is a
/// broken answer, and would overflow the clock arithmetic.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Checks a token before it is used, stored or written: non-empty, at most
/// [`MAX_TOKEN_LEN`] bytes, printable ASCII without whitespace (Vault's
/// tokens are base62 with a `hvs.`/`hvb.`/`s.` prefix). The reason never
/// contains the token.
pub fn check_token(token: &str) -> std::result::Result<(), String> {
    if token.is_empty() {
        return Err("empty token".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token of {} bytes, longer than {MAX_TOKEN_LEN}",
            token.len()
        ));
    }
    if let Some(pos) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "token with a whitespace or non-printable character at byte {pos}"
        ));
    }
    Ok(())
}

/// A TTL in seconds from an answer, checked against [`MAX_TTL`].
pub fn check_ttl(what: &str, secs: u64) -> std::result::Result<Duration, String> {
    let d = Duration::from_secs(secs);
    if d > MAX_TTL {
        return Err(format!(
            "{what} of {secs}s, longer than {}s",
            MAX_TTL.as_secs()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_before_use() {
        assert!(check_token("hvs.CAESIJ3x-_Abc").is_ok());
        assert!(check_token(&"a".repeat(MAX_TOKEN_LEN)).is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("hvs.abc\n", "byte 7"),
            ("hvs. abc", "byte 4"),
            ("hvs.\u{7f}", "non-printable"),
            ("hvs.é", "non-printable"),
        ] {
            let err = check_token(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(bad.is_empty() || !err.contains(bad), "token not in message");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(check_token(&long).unwrap_err().contains("longer than 4096"));
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(check_ttl("ttl", 30), Ok(Duration::from_secs(30)));
        assert!(check_ttl("ttl", MAX_TTL.as_secs()).is_ok());
        assert!(check_ttl("ttl", u64::MAX).unwrap_err().contains("ttl of"));
    }
}
