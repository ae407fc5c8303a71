//! [`Secret`]: a version 2 session's resume secret (docs/protocol.md, rule 6.2).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// The number of bytes of a secret; on the wire it is twice as many hex characters.
const BYTES: usize = 32;

/// A session's resume secret: 256 bits, written on the wire as 64 lowercase hexadecimal
/// characters (schema `$defs/Secret`, rule 6.2).
///
/// It is built to be hard to leak: `Debug` prints `Secret(..)`, there is no `Display`
/// (the hex form comes only from [`Secret::expose_hex`] or serialization), and `==`
/// compares in constant time, so that how long a comparison takes says nothing about
/// how much of a guess was right.
///
/// ```
/// # use compendium_messages::Secret;
/// let secret = Secret::from_bytes([7; 32]);
/// assert_eq!(format!("{secret:?}"), "Secret(..)");
/// let back: Secret = secret.expose_hex().parse()?;
/// assert_eq!(back, secret);
/// # Ok::<(), compendium_messages::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret([u8; BYTES]);

impl Secret {
    /// The secret whose bytes are `bytes`. A relay draws them from a cryptographically
    /// secure random source (rule 6.2).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; BYTES]) -> Self {
        Self(bytes)
    }

    /// The secret's wire form: 64 lowercase hexadecimal characters. Named so that every
    /// place that reveals a secret says so.
    #[must_use]
    pub fn expose_hex(&self) -> String {
        use fmt::Write as _;
        let mut hex = String::with_capacity(2 * BYTES);
        for byte in self.0 {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// The secret's 32 bytes, for a relay that hands a session to another of its nodes.
    /// Named, like [`Secret::expose_hex`], so that every place that reveals it says so.
    #[must_use]
    pub const fn expose_bytes(&self) -> &[u8; BYTES] {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a string is not a [`Secret`]. It never quotes the string: a near-miss secret is
/// still a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    chars: usize,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a secret is {} lowercase hexadecimal characters; this one has {} characters or \
             a character outside 0-9a-f",
            2 * BYTES,
            self.chars
        )
    }
}

impl std::error::Error for SecretError {}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = SecretError {
            chars: s.chars().count(),
        };
        let digits = s.as_bytes();
        if digits.len() != 2 * BYTES {
            return Err(error);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut bytes = [0; BYTES];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => *byte = (high << 4) | low,
                _ => return Err(error),
            }
        }
        Ok(Self(bytes))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expose_hex())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string of 64 lowercase hexadecimal characters")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_64_lowercase_hex() {
        let ok = "0123456789abcdef".repeat(4);
        assert_eq!(ok.parse::<Secret>().map(|s| s.expose_hex()), Ok(ok.clone()));
        for bad in [
            ok.to_uppercase(),
            ok[1..].to_owned(),
            format!("{ok}0"),
            format!("{}é", &ok[..63]),
            String::new(),
        ] {
            assert!(bad.parse::<Secret>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let text = "ab".repeat(31) + "zz";
        let err = text.parse::<Secret>().unwrap_err().to_string();
        assert!(!err.contains("abab"), "{err}");
        let secret: Secret = "ab".repeat(32).parse().unwrap();
        assert!(!format!("{secret:?}").contains("ab"));
    }
}
