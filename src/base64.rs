//! Base64 as the Go images spoke it: the `base64` crate's standard
//! alphabet (RFC 4648 §4) with Go's `base64.StdEncoding` rules on top.
//! Decodes `base64:` values from Vault; encodes Secret `data`.

use ::base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use ::base64::engine::DecodePaddingMode;
use ::base64::{alphabet, Engine};

/// Go's `base64.StdEncoding`: padded, padding required where it belongs,
/// and (not being `.Strict()`) unused bits of the last character ignored,
/// so `Zh==` is `f` as in Go.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Standard padded base64, as the API server expects in a Secret's `data`.
pub fn encode(input: &[u8]) -> String {
    GO_STD.encode(input)
}

/// Decoding as Go's `base64.StdEncoding`, which the Go images used: `\r`
/// and `\n` anywhere are skipped (so the 76-column lines of GNU `base64`
/// decode), otherwise strict: length a multiple of 4, padding only at the
/// end, no other whitespace. `None` for anything else.
pub fn decode(input: &str) -> Option<Vec<u8>> {
    if input.contains(['\r', '\n']) {
        let joined: Vec<u8> = input
            .bytes()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        GO_STD.decode(joined).ok()
    } else {
        GO_STD.decode(input).ok()
    }
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
        for bad in [
            "Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v ", "Zm9v\t", "Zm9*", "=", "====", "Zm9v=", "Z",
            " Zm9v", "Zm-_", "Zm9v\0",
        ] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn ignores_unused_bits_like_go_std_encoding() {
        // Go's StdEncoding is not Strict(): the bits of the last character
        // that fall outside the data are not checked.
        assert_eq!(decode("Zh==").unwrap(), b"f");
        assert_eq!(decode("Zm9=").unwrap(), b"fo");
        assert_eq!(decode("Zm+=").unwrap(), b"fo");
        // Line breaks may split the padding too.
        assert_eq!(decode("Zg=\r\n=").unwrap(), b"f");
    }
}
