//! The validity period of a PEM certificate, read with the least DER
//! needed: the synchronizer decides when a delivered certificate is due
//! for re-issue from the certificate itself (a Secret written by another
//! replica, or before a restart), as cert-manager does, not from a record
//! that could disagree with it.
//!
//! RFC 5280 §4.1: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//! [0] version OPTIONAL, serialNumber INTEGER, signature AlgorithmIdentifier,
//! issuer Name, validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }`,
//! `Time ::= UTCTime | GeneralizedTime`, both in UTC (`Z`) as §4.1.2.5 requires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate's `notBefore` and `notAfter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// `notAfter - notBefore`; zero for an inverted period.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }

    /// The moment `fraction` (0..=1) of the lifetime has passed.
    pub fn at(&self, fraction: f64) -> SystemTime {
        self.not_before + self.lifetime().mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The validity of the first certificate in `pem` (a leaf followed by its
/// chain, as `tls.crt` holds); `None` if there is none or it does not parse.
pub fn validity(pem: &[u8]) -> Option<Validity> {
    let der = first_pem_block(std::str::from_utf8(pem).ok()?, "CERTIFICATE")?;
    let (cert, _) = tlv(&der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, absent in v1 certificates.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.1;
    }
    rest = tlv(rest, 0x02)?.1; // serialNumber
    rest = tlv(rest, 0x30)?.1; // signature
    rest = tlv(rest, 0x30)?.1; // issuer
    let (validity, _) = tlv(rest, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// The bytes of the first `-----BEGIN <label>-----` block.
fn first_pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    crate::base64::decode(&body)
}

/// One DER element of tag `tag` at the start of `input`: (contents, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: 1 to 4 length bytes are plenty for a certificate.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049 per RFC 5280) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(input: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (tag, digits_len) = match input.first()? {
        0x17 => (0x17, 12),
        0x18 => (0x18, 14),
        _ => return None,
    };
    let (value, rest) = tlv(input, tag)?;
    if value.len() != digits_len + 1
        || value[digits_len] != b'Z'
        || !value[..digits_len].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| {
        value[range]
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'))
    };
    let (year, at) = if tag == 0x17 {
        let yy = num(0..2);
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    } else {
        (num(0..4), 4)
    };
    let (month, day) = (num(at..at + 2), num(at + 2..at + 4));
    let (hour, minute, second) = (
        num(at + 4..at + 6),
        num(at + 6..at + 8),
        num(at + 8..at + 10),
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
    Some((t, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
    // -nodes -subj /CN=t -days 1`: notBefore Dec  1 01:23:18 2026 GMT,
    // notAfter Dec  2 01:23:18 2026 GMT.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBbDCCAROgAwIBAgIUbKXtg+hT5Qjfgcq98UWOUZv9UNwwCgYIKoZIzj0EAwIw\n\
DDEKMAgGA1UEAwwBdDAeFw0yNjEyMDEwMTIzMThaFw0yNjEyMDIwMTIzMThaMAwx\n\
CjAIBgNVBAMMAXQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASpDeU5y4enZAed\n\
0nAwMqlReBdThvjhf/tcI+SGUgsbN6VPtEmde8QxZVEMgr69CV9cQwfoIfDyTiu5\n\
VZIUo3lqo1MwUTAdBgNVHQ4EFgQURTSSp+lMYxRlO9z0lgiyO1j9e0kwHwYDVR0j\n\
BBgwFoAURTSSp+lMYxRlO9z0lgiyO1j9e0kwDwYDVR0TAQH/BAUwAwEB/zAKBggq\n\
hkjOPQQDAgNHADBEAiBYAoHCTyZAdt+ldj32Lqs+ef+KwtzybXfflHtD1DbrEgIg\n\
SodTaAjVfH/yJKoPRJbMHji0i07eMWEZXaZxL4xJcr4=\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn reads_the_validity_of_the_first_certificate() {
        let v = validity(CERT.as_bytes()).unwrap();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(v.not_before), 1_796_088_198);
        assert_eq!(secs(v.not_after), 1_796_174_598);
        assert_eq!(v.lifetime(), Duration::from_secs(86_400));
        assert_eq!(secs(v.at(2.0 / 3.0)), 1_796_088_198 + 57_600);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2049, 12, 31), 29_219);
    }

    #[test]
    fn garbage_is_none() {
        assert!(validity(b"").is_none());
        assert!(
            validity(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_none()
        );
        let truncated = &CERT[..CERT.len() / 2];
        assert!(validity(truncated.as_bytes()).is_none());
    }
}
