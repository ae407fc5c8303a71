//! Message types and validation for the Compendium WebSocket relay protocol.
//!
//! The protocol is defined by a JSON Schema (`schema/message.schema.json` in the
//! compendium-wss repository, copied into this crate as [`SCHEMA_JSON`]); the [`Message`]
//! enum is generated from it by `cargo xtask codegen`, and [`Message::parse`] validates
//! every message against it before building the Rust value. See `docs/protocol.md` for the
//! normative rules the numbers in these docs refer to.
//!
//! ```
//! use compendium_messages::{Message, Payload};
//!
//! let text = r#"{"type":"ROUTE","EpheWssAddr":"00112233445566778899aabbccddeeff","msg":{"hi":1}}"#;
//! let Message::Route { ephe_wss_addr, msg, .. } = Message::parse(text)? else { unreachable!() };
//! assert_eq!(msg.as_str(), r#"{"hi":1}"#); // the sender's bytes, untouched
//! let deliver = Message::deliver(msg).to_json();
//! assert_eq!(deliver, r#"{"type":"DELIVER","msg":{"hi":1}}"#);
//!
//! let err = Message::parse(r#"{"type":"ROUTE","msg":{}}"#).unwrap_err();
//! assert_eq!(err.to_string(), r#"/EpheWssAddr: "EpheWssAddr" is a required property"#);
//! # Ok::<(), compendium_messages::ParseError>(())
//! ```

mod address;
mod depth;
mod error;
// Formatted by prettyplease inside `cargo xtask codegen` (its version is pinned by
// Cargo.lock); rustfmt must not reformat it, or `codegen --check` would see drift.
#[rustfmt::skip]
mod generated;
mod parse;
mod payload;
mod raw;
mod schema;
mod secret;

pub use address::{Address, AddressError};
pub use error::{ParseError, Violation};
pub use generated::{Message, TYPE_NAMES};
pub use payload::{Payload, PayloadError};
pub use schema::SCHEMA_JSON;
pub use secret::{Secret, SecretError};

/// The `errCode` values the protocol defines (rule 2.6).
pub mod codes {
    /// The message was not valid; `errMsg` says what is wrong (rule 3.7).
    pub const INVALID_MESSAGE: u16 = 400;
    /// No live connection holds the target address (rule 3.6).
    pub const NOT_FOUND: u16 = 404;
    /// Version 2: a RESUME that cannot resume — the session ended, expired, never existed,
    /// or the secret is wrong; all the same (rule 6.3).
    pub const SESSION_GONE: u16 = 410;
    /// The sender exceeded the relay's message rate (rule 3.9).
    pub const RATE_LIMITED: u16 = 429;
    /// A client-to-server type this relay knows but does not implement (rule 3.12).
    pub const NOT_IMPLEMENTED: u16 = 501;
    /// The target cannot accept more messages now; nothing was delivered (rule 3.8).
    pub const UNAVAILABLE: u16 = 503;
}

/// The WebSocket subprotocol that selects protocol version 2, resumable sessions
/// (docs/protocol.md section 6). A client offers it in `Sec-WebSocket-Protocol`; a relay
/// that speaks version 2 selects it, one that does not selects none.
pub const SUBPROTOCOL_V2: &str = "compendium.v2";

/// Who sends a type of message (rule 2.4; the schema's `x-direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Clients send it; a server that receives it acts on it.
    ClientToServer,
    /// Servers send it; a server that receives it from a client treats it as invalid.
    ServerToClient,
}

// The constructors below take what callers have at hand and delegate to the generated
// `Message::new_*` (one per type, with the type's required members only), so no
// hand-written code names a variant's fields: an optional member added to the schema
// changes none of it.
impl Message {
    /// `{"type":"INIT"}`: ask the relay for an address.
    #[must_use]
    pub fn init() -> Self {
        Self::new_init()
    }

    /// `{"type":"INITRESP","EpheWssAddr":...}`: the relay's answer to INIT.
    #[must_use]
    pub fn init_resp(address: Address) -> Self {
        Self::new_initresp(address)
    }

    /// `{"type":"ROUTE","EpheWssAddr":...,"msg":...}`: send `msg` to `to`.
    #[must_use]
    pub fn route(to: Address, msg: Payload) -> Self {
        Self::new_route(to, msg)
    }

    /// `{"type":"DELIVER","msg":...}`: a payload arriving at its target.
    #[must_use]
    pub fn deliver(msg: Payload) -> Self {
        Self::new_deliver(msg)
    }

    /// `{"type":"ERR","errCode":...,"errMsg":...}`; see [`codes`].
    #[must_use]
    pub fn err(code: u16, message: impl Into<String>) -> Self {
        Self::new_err(code, message.into())
    }

    /// The message's wire form: compact JSON, `type` first, `msg` written exactly as held.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Cannot fail: every map key is a string, there are no floats, and a Payload is
        // already valid JSON.
        serde_json::to_string(self).expect("messages always serialize")
    }
}
