//! [`Address`]: an ephemeral relay address (docs/protocol.md, rule 2.3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ephemeral relay address: 128 bits, written on the wire as exactly 32 lowercase
/// hexadecimal characters (schema `$defs/EpheWssAddr`, rule 2.3).
///
/// It is a plain `Copy` value, so a relay can use it as a map key without allocating.
/// Parsing accepts exactly the strings the schema's `pattern` accepts (a property test in
/// this crate compares the two).
///
/// ```
/// # use compendium_messages::Address;
/// let addr: Address = "0123456789abcdef0123456789abcdef".parse()?;
/// assert_eq!(addr.to_string(), "0123456789abcdef0123456789abcdef");
/// assert!("0123456789ABCDEF0123456789ABCDEF".parse::<Address>().is_err());
/// # Ok::<(), compendium_messages::AddressError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(u128);

/// The number of characters of an address on the wire.
const HEX_LEN: usize = 32;

impl Address {
    /// The address whose wire form is `bits` in hexadecimal, zero-padded to 32 characters.
    /// A relay draws `bits` from a cryptographically secure random source (rule 3.1).
    #[must_use]
    pub const fn from_bits(bits: u128) -> Self {
        Self(bits)
    }

    /// The 128 bits of this address.
    #[must_use]
    pub const fn to_bits(self) -> u128 {
        self.0
    }
}

/// Why a string is not an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    kind: AddressErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AddressErrorKind {
    Length(usize),
    Char { index: usize, found: char },
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AddressErrorKind::Length(n) => write!(
                f,
                "an address is {HEX_LEN} lowercase hexadecimal characters, this one has {n}"
            ),
            AddressErrorKind::Char { index, found } => write!(
                f,
                "an address is {HEX_LEN} lowercase hexadecimal characters, \
                 found {found:?} at position {index}"
            ),
        }
    }
}

impl std::error::Error for AddressError {}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.chars().count();
        if count != HEX_LEN {
            return Err(AddressError {
                kind: AddressErrorKind::Length(count),
            });
        }
        let mut bits: u128 = 0;
        for (index, found) in s.chars().enumerate() {
            let digit = match found {
                '0'..='9' => u32::from(found) - u32::from('0'),
                'a'..='f' => u32::from(found) - u32::from('a') + 10,
                _ => {
                    return Err(AddressError {
                        kind: AddressErrorKind::Char { index, found },
                    });
                }
            };
            bits = (bits << 4) | u128::from(digit);
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Address;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string of 32 lowercase hexadecimal characters")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Address, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}
