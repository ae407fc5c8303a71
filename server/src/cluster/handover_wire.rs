//! The bytes of a session's move between nodes (docs/cluster.md, "Resume on any node").
//! Pure functions: no NATS here. Everything read is checked as input from the network.
//!
//! | message | bytes |
//! |---|---|
//! | claim | `0x10` (check) or `0x11` (fetch), address (16), secret (32), RESUME `seq` (8) |
//! | accepted | `0x20`, the holder's node id (4) |
//! | refused | `0x21` |
//! | moved | `0x22`: the session was drawn here and lives elsewhere now |
//! | state chunk | `0x23`, last (1: 0 or 1), a slice of the encoded state |
//! | released | `0x30`, address (16): the session, drawn on the node told, has ended |
//! | late ERR | `0x31`, ROUTE `seq` (8), code (2), text: an answer for the session's stream |
//!
//! The state, once its chunks are joined: secret (32), previous (1 + 32 + 8), old secrets
//! (1 + 32 each), next seq, acknowledged, ROUTEs accepted (8 each), where each sending
//! node's numbered stream of requests to the session stands (4 + (4 + 4 + 8) each: node,
//! stream, next number; `inbound.rs`), then the stream (4 + (8 + 4 + bytes) each).

use compendium_messages::{Address, Secret};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::inbound::Stream;
use crate::addressing::NodeId;
use crate::session::Exported;

const CHECK: u8 = 0x10;
const FETCH: u8 = 0x11;
const ACCEPTED: u8 = 0x20;
const REFUSED: u8 = 0x21;
const MOVED: u8 = 0x22;
const CHUNK: u8 = 0x23;
const RELEASED: u8 = 0x30;
const LATE_ERR: u8 = 0x31;

/// The most senders' streams a state carries.
const MAX_STREAMS: usize = 65_536;

/// Which step of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Would this RESUME resume the session? (Nothing moves yet.)
    Check,
    /// Send the session over.
    Fetch,
}

/// A claim: a RESUME that reached another node, asking the holder for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) step: Step,
    pub(crate) address: Address,
    pub(crate) secret: Secret,
    pub(crate) seq: u64,
}

/// What a node answers to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Accepted(NodeId),
    Refused,
    Moved,
    Chunk { last: bool, bytes: Vec<u8> },
}

/// Anything that arrives on a node's claim subject or a session's subject, other than a
/// forwarded ROUTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Claim(Claim),
    Released(Address),
    LateErr { route: u64, code: u16, text: String },
}

pub(crate) fn encode_claim(claim: &Claim) -> Vec<u8> {
    let mut out = Vec::with_capacity(57);
    out.push(match claim.step {
        Step::Check => CHECK,
        Step::Fetch => FETCH,
    });
    out.extend_from_slice(&claim.address.to_bits().to_be_bytes());
    out.extend_from_slice(claim.secret.expose_bytes());
    out.extend_from_slice(&claim.seq.to_be_bytes());
    out
}

pub(crate) fn encode_released(address: Address) -> Vec<u8> {
    let mut out = vec![RELEASED];
    out.extend_from_slice(&address.to_bits().to_be_bytes());
    out
}

pub(crate) fn encode_late_err(route: u64, code: u16, text: &str) -> Vec<u8> {
    let mut out = vec![LATE_ERR];
    out.extend_from_slice(&route.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Whether `bytes` is a control message rather than a forwarded ROUTE.
pub(crate) fn is_control(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| *b >= CHECK)
}

pub(crate) fn decode_control(bytes: &[u8]) -> Option<Control> {
    let mut r = Reader(bytes);
    match r.u8()? {
        step @ (CHECK | FETCH) => {
            let claim = Claim {
                step: if step == CHECK {
                    Step::Check
                } else {
                    Step::Fetch
                },
                address: r.address()?,
                secret: r.secret()?,
                seq: r.u64()?,
            };
            r.end()?;
            Some(Control::Claim(claim))
        }
        RELEASED => {
            let address = r.address()?;
            r.end()?;
            Some(Control::Released(address))
        }
        LATE_ERR => {
            let route = r.u64()?;
            let code = u16::from_be_bytes([r.u8()?, r.u8()?]);
            let text = std::str::from_utf8(r.0).ok()?.to_owned();
            Some(Control::LateErr { route, code, text })
        }
        _ => None,
    }
}

pub(crate) fn encode_answer(answer: &Answer) -> Vec<u8> {
    match answer {
        Answer::Accepted(node) => {
            let mut out = vec![ACCEPTED];
            out.extend_from_slice(&node.0.to_be_bytes());
            out
        }
        Answer::Refused => vec![REFUSED],
        Answer::Moved => vec![MOVED],
        Answer::Chunk { last, bytes } => {
            let mut out = Vec::with_capacity(2 + bytes.len());
            out.push(CHUNK);
            out.push(u8::from(*last));
            out.extend_from_slice(bytes);
            out
        }
    }
}

pub(crate) fn decode_answer(bytes: &[u8]) -> Option<Answer> {
    let mut r = Reader(bytes);
    match r.u8()? {
        ACCEPTED => {
            let node = NodeId(r.u32()?);
            r.end()?;
            Some(Answer::Accepted(node))
        }
        REFUSED => r.end().map(|()| Answer::Refused),
        MOVED => r.end().map(|()| Answer::Moved),
        CHUNK => {
            let last = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            Some(Answer::Chunk {
                last,
                bytes: r.0.to_vec(),
            })
        }
        _ => None,
    }
}

/// The state of a session that moves, with where its senders' streams stand; to be cut
/// into chunks of at most `chunk` bytes.
pub(crate) fn encode_state(
    exported: &Exported,
    inbound: &[(Stream, u64)],
    chunk: usize,
) -> Vec<Answer> {
    let mut out = Vec::new();
    out.extend_from_slice(exported.secret.expose_bytes());
    match &exported.previous {
        Some((secret, seq)) => {
            out.push(1);
            out.extend_from_slice(secret.expose_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        None => out.push(0),
    }
    out.push(u8::try_from(exported.old_secrets.len()).unwrap_or(u8::MAX));
    for old in exported.old_secrets.iter().take(usize::from(u8::MAX)) {
        out.extend_from_slice(old.expose_bytes());
    }
    for n in [exported.next_seq, exported.acked, exported.routes_accepted] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    let inbound = &inbound[..inbound.len().min(MAX_STREAMS)];
    out.extend_from_slice(&(inbound.len() as u32).to_be_bytes());
    for ((node, stream), next) in inbound {
        out.extend_from_slice(&node.0.to_be_bytes());
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&next.to_be_bytes());
    }
    out.extend_from_slice(&(exported.stream.len() as u32).to_be_bytes());
    for (seq, frame) in &exported.stream {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame.as_bytes());
    }
    let chunk = chunk.max(1);
    let count = out.len().div_ceil(chunk).max(1);
    (0..count)
        .map(|i| Answer::Chunk {
            last: i + 1 == count,
            bytes: out[(i * chunk).min(out.len())..((i + 1) * chunk).min(out.len())].to_vec(),
        })
        .collect()
}

/// Read a state back: the session at `address`, and where its senders' streams stand.
/// `None` for anything malformed (the caller answers the RESUME 503; nothing is installed).
pub(crate) fn decode_state(
    address: Address,
    bytes: &[u8],
) -> Option<(Exported, Vec<(Stream, u64)>)> {
    let mut r = Reader(bytes);
    let secret = r.secret()?;
    let previous = match r.u8()? {
        0 => None,
        1 => Some((r.secret()?, r.u64()?)),
        _ => return None,
    };
    let old = r.u8()?;
    let old_secrets = (0..old).map(|_| r.secret()).collect::<Option<Vec<_>>>()?;
    let (next_seq, acked, routes_accepted) = (r.u64()?, r.u64()?, r.u64()?);
    let streams = r.u32()? as usize;
    if streams > MAX_STREAMS {
        return None;
    }
    let mut inbound = Vec::with_capacity(streams);
    for _ in 0..streams {
        inbound.push(((NodeId(r.u32()?), r.u32()?), r.u64()?));
    }
    let frames = r.u32()? as usize;
    // Each frame takes at least 12 bytes: a count beyond what is left is a lie.
    if frames > r.0.len() / 12 {
        return None;
    }
    let mut stream = Vec::with_capacity(frames);
    for _ in 0..frames {
        let seq = r.u64()?;
        let len = r.u32()? as usize;
        let text = std::str::from_utf8(r.take(len)?).ok()?;
        stream.push((seq, Utf8Bytes::from(text.to_owned())));
    }
    r.end()?;
    Some((
        Exported {
            address,
            secret,
            previous,
            old_secrets,
            next_seq,
            acked,
            routes_accepted,
            stream,
        },
        inbound,
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Some(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(b))
    }

    fn address(&mut self) -> Option<Address> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Some(Address::from_bits(u128::from_be_bytes(b)))
    }

    fn secret(&mut self) -> Option<Secret> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Some(Secret::from_bytes(b))
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported() -> Exported {
        Exported {
            address: Address::from_bits(42),
            secret: Secret::from_bytes([1; 32]),
            previous: Some((Secret::from_bytes([2; 32]), 3)),
            old_secrets: vec![Secret::from_bytes([3; 32]), Secret::from_bytes([4; 32])],
            next_seq: 10,
            acked: 3,
            routes_accepted: 7,
            stream: (4..10)
                .map(|seq| {
                    (
                        seq,
                        Utf8Bytes::from(format!(
                            r#"{{"seq":{seq},"é":"{}"}}"#,
                            "x".repeat(seq as usize * 50)
                        )),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_state_reads_back_as_written_whatever_the_chunk_size() {
        let inbound = vec![((NodeId(0xabcd), 7), 12), ((NodeId(1), 8), 1)];
        for chunk in [1, 7, 100, 1 << 20] {
            let chunks = encode_state(&exported(), &inbound, chunk);
            let mut bytes = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                let wire = encode_answer(c);
                let Some(Answer::Chunk { last, bytes: part }) = decode_answer(&wire) else {
                    panic!("chunk {i} does not read back");
                };
                assert_eq!(last, i + 1 == chunks.len());
                assert!(part.len() <= chunk);
                bytes.extend(part);
            }
            let (back, streams) = decode_state(Address::from_bits(42), &bytes).expect("reads back");
            assert_eq!(back, exported());
            assert_eq!(streams, inbound);
        }
    }

    #[test]
    fn a_torn_or_lying_state_is_refused() {
        let chunks = encode_state(&exported(), &[], 1 << 20);
        let Answer::Chunk { bytes, .. } = &chunks[0] else {
            panic!("one chunk");
        };
        for cut in [0, 1, 40, bytes.len() - 1] {
            assert!(
                decode_state(Address::from_bits(1), &bytes[..cut]).is_none(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state(Address::from_bits(1), &longer).is_none());
    }

    #[test]
    fn control_messages_round_trip_and_junk_is_none() {
        let claim = Claim {
            step: Step::Fetch,
            address: Address::from_bits(u128::MAX),
            secret: Secret::from_bytes([9; 32]),
            seq: 77,
        };
        let bytes = encode_claim(&claim);
        assert!(is_control(&bytes));
        assert_eq!(decode_control(&bytes), Some(Control::Claim(claim)));
        assert_eq!(
            decode_control(&encode_released(Address::from_bits(5))),
            Some(Control::Released(Address::from_bits(5)))
        );
        assert_eq!(
            decode_control(&encode_late_err(4, 503, "full")),
            Some(Control::LateErr {
                route: 4,
                code: 503,
                text: "full".to_owned()
            })
        );
        assert!(
            !is_control(&[1, 2, 3]),
            "a forwarded ROUTE starts with version 1"
        );
        assert_eq!(decode_control(&[CHECK, 1, 2]), None);
        assert_eq!(decode_control(&[0x7f]), None);
        for answer in [Answer::Accepted(NodeId(7)), Answer::Refused, Answer::Moved] {
            assert_eq!(decode_answer(&encode_answer(&answer)), Some(answer));
        }
        assert_eq!(decode_answer(&[CHUNK, 2]), None);
        assert_eq!(decode_answer(&[]), None);
    }
}
