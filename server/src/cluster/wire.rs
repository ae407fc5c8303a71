//! What nodes say to each other over NATS, byte for byte. Pure functions: no NATS here.
//!
//! A forwarded ROUTE goes to the subject of the node that holds its target
//! (`<prefix>.node.<node id>`), with a reply subject that names the request
//! (`<prefix>.verdict.<sender's node id>.<request id>`):
//!
//! | bytes | what |
//! |---|---|
//! | 0 | format version, 1 |
//! | 1..9 | the time after which it must not be delivered: Unix milliseconds, big-endian |
//! | 9..25 | the target address |
//! | 25.. | the `msg`, the sender's exact JSON text |
//!
//! A ROUTE to the subject of a session that moved (`handover.rs`) has format version 2 (3
//! when its session's previous holder passes it on), and 16 more bytes after the target
//! address: the sending node's id (4), its stream id for that session (4) and the ROUTE's
//! number in that stream (8), which put it in its place on arrival (`inbound.rs`).
//!
//! A request that was delivered is acknowledged in a batch, on
//! `<prefix>.verdict.<sender's node id>.ack`: the version, then the ids of the delivered
//! requests (8 bytes each, big-endian). Every other verdict is answered at once, one byte
//! on the request's own reply subject: the [`Verdict`]. Batching the common answer halves
//! the messages NATS carries and spares the sender's connection a wake-up per message
//! (docs/cluster.md, "Design"). Every node also says it is
//! alive on `<prefix>.presence` (six bytes: version, kind, node id), so that a node whose
//! subject has no subscriber is told apart from one that is failing over. A node that receives a
//! request treats it as untrusted input: it checks the length, the version, the expiry,
//! and that `msg` is a JSON object within the protocol's limits before delivering it.

use compendium_messages::Address;

use crate::addressing::NodeId;
use crate::remote::Verdict;

/// The format version this node writes and reads.
const VERSION: u8 = 1;
/// A forwarded ROUTE to a session's subject (a session that moved): numbered.
const SESSION_VERSION: u8 = 2;
/// The same, sent on by a session's previous holder after it let the session go.
const PASSED_ON_VERSION: u8 = 3;

/// Bytes before the `msg`.
pub(crate) const HEADER: usize = 25;
/// Bytes before the `msg` of a numbered request: the sender's node id, its stream id
/// for the target, and the request's number in that stream follow the header.
const SESSION_HEADER: usize = HEADER + 16;

/// A forwarded ROUTE, as read from the wire (`msg` not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    /// Unix milliseconds after which it must not be delivered.
    pub(crate) expires_ms: u64,
    pub(crate) address: Address,
    /// Requests to a session's subject are numbered per sending node and target
    /// (docs/cluster.md, "Resume on any node"): while the session moves, the same request
    /// can reach two nodes, or reach the new holder late; the number puts it in its place.
    pub(crate) numbered: Option<Numbered>,
    pub(crate) msg: &'a [u8],
}

/// Where a numbered request stands in its sender's stream to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Numbered {
    /// The sending node and its stream id for the target.
    pub(crate) stream: (NodeId, u32),
    /// 1, 2, 3, … in the order the sender sent them.
    pub(crate) seq: u64,
    /// Sent on by the session's previous holder.
    pub(crate) passed_on: bool,
}

/// A numbered request from the v1 bytes of `request`: the same ROUTE, for a session's
/// subject.
pub(crate) fn number_request(request: &[u8], numbered: Numbered) -> Vec<u8> {
    let mut out = Vec::with_capacity(request.len() + 16);
    out.push(if numbered.passed_on {
        PASSED_ON_VERSION
    } else {
        SESSION_VERSION
    });
    let (header, msg) = match decode_request(request) {
        Ok(decoded) => (&request[1..HEADER], decoded.msg),
        Err(_) => (&request[1..request.len().min(HEADER)], &[][..]),
    };
    out.extend_from_slice(header);
    out.extend_from_slice(&numbered.stream.0.0.to_be_bytes());
    out.extend_from_slice(&numbered.stream.1.to_be_bytes());
    out.extend_from_slice(&numbered.seq.to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The same numbered request, marked as sent on by a previous holder.
pub(crate) fn pass_on(request: &[u8]) -> Option<Vec<u8>> {
    match request.first() {
        Some(&SESSION_VERSION) => {
            let mut out = request.to_vec();
            out[0] = PASSED_ON_VERSION;
            Some(out)
        }
        _ => None,
    }
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    TooShort(usize),
    Version(u8),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort(len) => write!(f, "{len} bytes, fewer than the {HEADER}-byte header"),
            Self::Version(v) => write!(f, "format version {v}, this node reads {VERSION}"),
        }
    }
}

/// The bytes of a forwarded ROUTE.
pub(crate) fn encode_request(expires_ms: u64, address: Address, msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + msg.len());
    out.push(VERSION);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(&address.to_bits().to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
    out
}

/// Read a forwarded ROUTE.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request<'_>, Malformed> {
    let version = bytes.first().copied().unwrap_or(VERSION);
    let numbered = matches!(version, SESSION_VERSION | PASSED_ON_VERSION);
    let header = if numbered { SESSION_HEADER } else { HEADER };
    if bytes.len() < header {
        return Err(Malformed::TooShort(bytes.len()));
    }
    if version != VERSION && !numbered {
        return Err(Malformed::Version(version));
    }
    let be = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0u128, |n, b| (n << 8) | u128::from(*b))
    };
    Ok(Request {
        expires_ms: be(1..9) as u64,
        address: Address::from_bits(be(9..25)),
        numbered: numbered.then(|| Numbered {
            stream: (NodeId(be(25..29) as u32), be(29..33) as u32),
            seq: be(33..41) as u64,
            passed_on: version == PASSED_ON_VERSION,
        }),
        msg: &bytes[header..],
    })
}

/// The one byte that answers a request.
pub(crate) fn encode_verdict(verdict: Verdict) -> [u8; 1] {
    [match verdict {
        Verdict::Delivered => 0,
        Verdict::NotFound => 1,
        Verdict::Full => 2,
        Verdict::TimedOut => 3,
        Verdict::Refused => 4,
        // Never sent: a node that cannot reach NATS cannot answer at all, and absence
        // is what a node concludes when nobody answers.
        Verdict::Unreachable => 5,
        Verdict::Absent => 6,
        // A ROUTE held for a detached session that did not resume in time.
        Verdict::Away => 7,
        // Never sent: what a node concludes of another that stopped beating.
        Verdict::Silent => 8,
        Verdict::Moved => 9,
        Verdict::Held => 10,
    }]
}

/// Read an answer; anything unknown counts as a refusal (nothing is known to be delivered).
pub(crate) fn decode_verdict(bytes: &[u8]) -> Verdict {
    match bytes {
        [0] => Verdict::Delivered,
        [1] => Verdict::NotFound,
        [2] => Verdict::Full,
        [3] => Verdict::TimedOut,
        [5] => Verdict::Unreachable,
        [6] => Verdict::Absent,
        [7] => Verdict::Away,
        [9] => Verdict::Moved,
        [10] => Verdict::Held,
        _ => Verdict::Refused,
    }
}

/// The most request ids one acknowledgement carries.
pub(crate) const MAX_ACK_IDS: usize = 128;

/// The bytes of an acknowledgement: the requests `ids` were delivered.
pub(crate) fn encode_ack(ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 * ids.len());
    out.push(VERSION);
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// The ids an acknowledgement says were delivered; `None` if it is not one this node reads.
pub(crate) fn decode_ack(bytes: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    let (&version, ids) = bytes.split_first()?;
    if version != VERSION || ids.len() % 8 != 0 {
        return None;
    }
    Some(ids.chunks_exact(8).map(|id| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(id);
        u64::from_be_bytes(bytes)
    }))
}

/// What a node says on `<prefix>.presence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// "I am here" (every heartbeat).
    Beat(NodeId),
    /// "I am leaving" (graceful shutdown): its addresses are gone now.
    Leaving(NodeId),
}

/// The bytes of a presence message: version, kind (0 beat, 1 leaving), node id.
pub(crate) fn encode_presence(presence: Presence) -> [u8; 6] {
    let (kind, node) = match presence {
        Presence::Beat(node) => (0, node),
        Presence::Leaving(node) => (1, node),
    };
    let id = node.0.to_be_bytes();
    [VERSION, kind, id[0], id[1], id[2], id[3]]
}

/// Read a presence message; `None` for anything else.
pub(crate) fn decode_presence(bytes: &[u8]) -> Option<Presence> {
    match bytes {
        [VERSION, kind, a, b, c, d] => {
            let node = NodeId(u32::from_be_bytes([*a, *b, *c, *d]));
            match kind {
                0 => Some(Presence::Beat(node)),
                1 => Some(Presence::Leaving(node)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_as_written() {
        let address = Address::from_bits(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        let bytes = encode_request(1_700_000_000_123, address, r#"{"a":1}"#);
        assert_eq!(bytes.len(), HEADER + 7);
        assert_eq!(
            decode_request(&bytes),
            Ok(Request {
                expires_ms: 1_700_000_000_123,
                address,
                numbered: None,
                msg: br#"{"a":1}"#,
            })
        );
    }

    #[test]
    fn a_numbered_request_reads_back_and_can_be_passed_on() {
        let address = Address::from_bits(u128::MAX - 5);
        let plain = encode_request(77, address, r#"{"b":[1]}"#);
        let numbered = Numbered {
            stream: (NodeId(0xdead_beef), 7),
            seq: u64::MAX - 1,
            passed_on: false,
        };
        let bytes = number_request(&plain, numbered);
        let read = decode_request(&bytes).expect("reads");
        assert_eq!(
            (read.expires_ms, read.address, read.numbered, read.msg),
            (77, address, Some(numbered), &br#"{"b":[1]}"#[..])
        );
        let passed = pass_on(&bytes).expect("a numbered request");
        assert_eq!(
            decode_request(&passed).ok().and_then(|r| r.numbered),
            Some(Numbered {
                passed_on: true,
                ..numbered
            })
        );
        assert!(
            pass_on(&plain).is_none(),
            "only numbered requests are passed on"
        );
        assert!(pass_on(&passed).is_none(), "and only once");
        assert_eq!(decode_request(&bytes[..40]), Err(Malformed::TooShort(40)));
    }

    #[test]
    fn malformed_requests_are_refused_not_misread() {
        assert_eq!(decode_request(&[1; 24]), Err(Malformed::TooShort(24)));
        let mut bytes = encode_request(0, Address::from_bits(1), "{}");
        bytes[0] = 4;
        assert_eq!(decode_request(&bytes), Err(Malformed::Version(4)));
    }

    #[test]
    fn presence_round_trips_and_junk_is_ignored() {
        for presence in [
            Presence::Beat(NodeId(7)),
            Presence::Leaving(NodeId(u32::MAX)),
        ] {
            assert_eq!(decode_presence(&encode_presence(presence)), Some(presence));
        }
        assert_eq!(decode_presence(&[1, 2, 0, 0, 0, 0]), None);
        assert_eq!(decode_presence(&[2, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_presence(b"hello"), None);
    }

    #[test]
    fn acknowledgements_round_trip_and_junk_is_ignored() {
        let ids = [1, 2, u64::MAX];
        let bytes = encode_ack(&ids);
        assert_eq!(bytes.len(), 25);
        assert_eq!(
            decode_ack(&bytes).map(Iterator::collect::<Vec<_>>),
            Some(ids.to_vec())
        );
        assert_eq!(decode_ack(&[VERSION]).map(Iterator::count), Some(0));
        assert!(decode_ack(&[]).is_none());
        assert!(decode_ack(&bytes[..24]).is_none(), "a torn id");
        assert!(
            decode_ack(&[2, 0, 0, 0, 0, 0, 0, 0, 1]).is_none(),
            "another version"
        );
    }

    #[test]
    fn verdicts_round_trip_and_unknown_bytes_are_refusals() {
        for verdict in [
            Verdict::Delivered,
            Verdict::NotFound,
            Verdict::Full,
            Verdict::TimedOut,
            Verdict::Refused,
            Verdict::Unreachable,
            Verdict::Absent,
            Verdict::Moved,
            Verdict::Held,
            Verdict::Away,
        ] {
            assert_eq!(decode_verdict(&encode_verdict(verdict)), verdict);
        }
        assert_eq!(decode_verdict(&[]), Verdict::Refused);
        assert_eq!(decode_verdict(&[0, 0]), Verdict::Refused);
        assert_eq!(decode_verdict(&[11]), Verdict::Refused);
    }
}
