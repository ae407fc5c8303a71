//! Addresses: how a node draws them and, in a cluster, which node holds one.
//!
//! A single relay draws 128 bits from the OS CSPRNG (rule 3.1). A cluster node draws 96
//! random bits, puts its 32-bit node id in front, and encrypts the block with AES-128
//! under the cluster's key: any node that has the key finds the holder by decrypting (one
//! block, no lookup, no directory to keep in sync), while to everyone else the address is
//! a random permutation of distinct blocks — indistinguishable from 128 random bits. Two
//! nodes never draw the same address (different node ids make different blocks), and a
//! node checks its own draws against its directory as a single relay does.

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use compendium_messages::Address;

/// A cluster node's identity in addresses and NATS subjects: 32 random bits drawn at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NodeId(pub(crate) u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl NodeId {
    /// A fresh random id.
    pub(crate) fn random() -> Result<Self, String> {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Self(u32::from_be_bytes(bytes)))
    }
}

/// Where an address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// On this node (or this is a single relay).
    Here,
    /// On another node of the cluster.
    Node(NodeId),
}

/// How the relay draws addresses and tells where one lives.
pub(crate) trait Addressing: Send + Sync {
    /// A fresh address; `Err` if the OS random source failed.
    fn draw(&self) -> Result<Address, String>;

    /// Which node holds `address`, if it is live anywhere.
    fn home(&self, address: Address) -> Home;
}

/// A single relay: 128 random bits; every address is "here".
pub(crate) struct Random;

impl Addressing for Random {
    fn draw(&self) -> Result<Address, String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Address::from_bits(u128::from_le_bytes(bytes)))
    }

    fn home(&self, _: Address) -> Home {
        Home::Here
    }
}

/// The cluster's shared secret: the AES-128 key that seals node ids into addresses.
#[derive(Clone)]
pub struct ClusterKey([u8; 16]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key itself.
        f.write_str("ClusterKey(…)")
    }
}

impl ClusterKey {
    /// The key from 32 hexadecimal characters (surrounding whitespace ignored), e.g. the
    /// contents of a file made with `openssl rand -hex 16`.
    ///
    /// # Errors
    /// If the text is not exactly 32 hexadecimal characters.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a cluster key is 32 hexadecimal characters (make one with `openssl rand -hex 16`), \
                 not {} characters",
                text.len()
            ));
        }
        let bits = u128::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        Ok(Self(bits.to_be_bytes()))
    }
}

/// A cluster node: addresses carry the node id, sealed under the cluster key.
pub(crate) struct Sealed {
    cipher: Aes128,
    node: NodeId,
}

impl Sealed {
    pub(crate) fn new(key: &ClusterKey, node: NodeId) -> Self {
        Self {
            cipher: Aes128::new(&key.0.into()),
            node,
        }
    }

    /// The address of `random` (96 bits are used) on `node`.
    fn seal(&self, node: NodeId, random: [u8; 12]) -> Address {
        let mut block = [0u8; 16];
        block[..4].copy_from_slice(&node.0.to_be_bytes());
        block[4..].copy_from_slice(&random);
        let mut block = block.into();
        self.cipher.encrypt_block(&mut block);
        Address::from_bits(u128::from_be_bytes(block.into()))
    }

    /// The node an address was drawn on.
    fn node_of(&self, address: Address) -> NodeId {
        let mut block = address.to_bits().to_be_bytes().into();
        self.cipher.decrypt_block(&mut block);
        let block: [u8; 16] = block.into();
        NodeId(u32::from_be_bytes([block[0], block[1], block[2], block[3]]))
    }
}

impl Addressing for Sealed {
    fn draw(&self) -> Result<Address, String> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| e.to_string())?;
        Ok(self.seal(self.node, random))
    }

    fn home(&self, address: Address) -> Home {
        match self.node_of(address) {
            node if node == self.node => Home::Here,
            node => Home::Node(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::from_hex("000102030405060708090a0b0c0d0e0f").expect("key")
    }

    #[test]
    fn every_node_finds_the_holder_of_every_address() {
        let (a, b) = (NodeId(1), NodeId(0xdead_beef));
        let (on_a, on_b) = (Sealed::new(&key(), a), Sealed::new(&key(), b));
        for _ in 0..1000 {
            let address = on_a.draw().expect("draw");
            assert_eq!(on_a.home(address), Home::Here);
            assert_eq!(on_b.home(address), Home::Node(a));
            let address = on_b.draw().expect("draw");
            assert_eq!(on_a.home(address), Home::Node(b));
        }
    }

    #[test]
    fn a_node_with_another_key_finds_nothing_meaningful() {
        let here = Sealed::new(&key(), NodeId(7));
        let stranger = Sealed::new(
            &ClusterKey::from_hex("ffffffffffffffffffffffffffffffff").expect("key"),
            NodeId(7),
        );
        let misplaced = (0..100)
            .filter(|_| stranger.home(here.draw().expect("draw")) == Home::Here)
            .count();
        assert!(misplaced <= 1, "{misplaced} of 100 looked like its own");
    }

    #[test]
    fn sealed_addresses_look_random() {
        // The node id is in every plaintext; none of it may show: each bit of the address
        // is one about half of the time.
        let node = Sealed::new(&key(), NodeId(0));
        let draws = 4000;
        let mut ones = [0u32; 128];
        for _ in 0..draws {
            let bits = node.draw().expect("draw").to_bits();
            for (i, count) in ones.iter_mut().enumerate() {
                *count += u32::from((bits >> i) & 1 == 1);
            }
        }
        for (i, count) in ones.iter().enumerate() {
            // 4000 fair coins: 2000 ± 5 sigma (sigma ≈ 31.6).
            assert!((1842..=2158).contains(count), "bit {i}: {count} of {draws}");
        }
    }

    #[test]
    fn keys_are_32_hex_characters() {
        assert!(ClusterKey::from_hex(" 000102030405060708090a0b0c0d0e0f\n").is_ok());
        let err = ClusterKey::from_hex("abc").expect_err("short");
        assert!(err.contains("32 hexadecimal characters"), "{err}");
        assert!(ClusterKey::from_hex(&"g".repeat(32)).is_err());
        assert_eq!(format!("{:?}", key()), "ClusterKey(…)");
    }
}
