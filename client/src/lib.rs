//! Client library for the Compendium WebSocket relay (docs/protocol.md).
//!
//! A client connects to a relay, asks for an ephemeral address ([`Client::init`]), shares
//! it out of band, and exchanges JSON objects with other clients ([`Client::route`],
//! [`Event::Deliver`]).
//!
//! - Async (tokio): [`Client`], or its halves [`Sender`] and [`Events`].
//! - Blocking (no runtime needed in the caller): [`blocking::Client`].
//!
//! Every frame from the relay is validated with
//! [`compendium_messages::Message::parse`]; anything invalid surfaces as an
//! [`Event::Error`], never a panic and never silently. [`Sender::close`] sends everything
//! queued before it, then closes: one writer task owns the socket and executes commands in
//! order, so a close can never overtake a send.

pub mod blocking;
mod client;
mod connect;
mod driver;
mod error;
mod event;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod resumable;
mod tls_problem;

pub use client::{Client, ClientBuilder, Events, Sender};
pub use compendium_messages::{Address, Payload};
pub use connect::{RawIo, RawSocket};
pub use error::{ConnectError, ConnectStage, Error, Result};
pub use event::Event;
pub use tls_problem::TlsProblem;
