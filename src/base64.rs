//! Standard padded base64 (RFC 4648 §4): decode for `base64:` values in
//! Vault, encode for Secret `data`. Forty lines instead of a dependency.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decoding as Go's `base64.StdEncoding`, which the Go images used: `\r`
/// and `\n` anywhere are skipped (so the 76-column lines of GNU `base64`
/// decode), otherwise strict: length a multiple of 4, padding only at the
/// end, no other whitespace.
pub fn decode(input: &str) -> Option<Vec<u8>> {
    let joined: Vec<u8>;
    let bytes = if input.contains(['\r', '\n']) {
        joined = input
            .bytes()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        &joined[..]
    } else {
        input.as_bytes()
    };
    if bytes.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn skips_line_breaks_like_go() {
        // GNU base64 wraps at 76 columns; Go's decoder skips \r and \n.
        let data: Vec<u8> = (0..=255).cycle().take(200).collect();
        let wrapped: String = encode(&data)
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
            .collect();
        assert_eq!(decode(&wrapped).unwrap(), data);
        assert_eq!(decode("Zm\n9v\n").unwrap(), b"foo");
        assert_eq!(decode("\n").unwrap(), b"");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v ", "Zm9v\t", "Zm9*"] {
            assert!(decode(bad).is_none(), "{bad}");
        }
    }
}
