//! The client's handling of inbound frames (compendium-client's `fuzzing::Inbound`)
//! against the behaviour its docs promise, over arbitrary interleavings of INITs and
//! ROUTEs written and frames received.
//!
//! Properties: nothing panics; every invalid or unexpected frame becomes an
//! `InvalidFrame` event; a DELIVER's payload is the frame's `msg` bytes; INITRESPs answer
//! pending INITs oldest first; an ERR answers the oldest INIT only when no ROUTE was
//! written just before that INIT and the code is not 400 or 404; otherwise it is an event.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use compendium_client::fuzzing::{Handled, Inbound};
use compendium_client::{Error, Event};
use compendium_messages::{Address, Message, codes};

use crate::msg::Msg;

#[derive(Arbitrary, Debug)]
enum Step {
    InitSent,
    RouteSent,
    Raw(String),
    InitResp(u128),
    Deliver(Msg),
    Err(Code, String),
}

/// ERR codes: the protocol's own, so the fuzzer meets them often, or any other.
#[derive(Arbitrary, Debug)]
enum Code {
    InvalidMessage,
    NotFound,
    RateLimited,
    Unavailable,
    Other(u16),
}

impl Code {
    fn value(&self) -> u16 {
        match self {
            Self::InvalidMessage => codes::INVALID_MESSAGE,
            Self::NotFound => codes::NOT_FOUND,
            Self::RateLimited => codes::RATE_LIMITED,
            Self::Unavailable => codes::UNAVAILABLE,
            Self::Other(code) => *code,
        }
    }
}

/// One input.
pub fn run(data: &[u8]) {
    let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut inbound = Inbound::new();
    // For each pending INIT: whether ROUTEs were written between it and the INIT before.
    let mut pending: VecDeque<bool> = VecDeque::new();
    let mut routes_since_init = false;
    for step in steps {
        let text = match step {
            Step::InitSent => {
                inbound.init_sent();
                pending.push_back(std::mem::take(&mut routes_since_init));
                continue;
            }
            Step::RouteSent => {
                inbound.route_sent();
                routes_since_init = true;
                continue;
            }
            Step::Raw(text) => text,
            Step::InitResp(bits) => Message::init_resp(Address::from_bits(bits)).to_json(),
            Step::Deliver(msg) => format!(r#"{{"type":"DELIVER","msg":{}}}"#, msg.render()),
            Step::Err(code, text) => Message::err(code.value(), text).to_json(),
        };
        let handled = inbound.frame(&text);
        match Message::parse(&text) {
            // Client-to-server types, and the version 2 types a v1 connection never gets.
            Err(_)
            | Ok(
                Message::Init { .. }
                | Message::Route { .. }
                | Message::Resume { .. }
                | Message::Ack { .. }
                | Message::End { .. }
                | Message::Resumed { .. }
                | Message::Routeack { .. },
            ) => {
                assert!(handled.is_invalid_frame(), "{text:?} → {handled:?}");
            }
            Ok(Message::Deliver { msg, .. }) => match handled {
                Handled::Event(Event::Deliver(got)) => assert_eq!(got.as_str(), msg.as_str()),
                other => panic!("{text:?} → {other:?}"),
            },
            Ok(Message::Initresp { ephe_wss_addr, .. }) => {
                if pending.pop_front().is_some() {
                    assert!(
                        matches!(handled, Handled::InitAnswered(Ok(a)) if a == ephe_wss_addr),
                        "{handled:?}"
                    );
                } else {
                    assert!(handled.is_invalid_frame(), "unasked INITRESP → {handled:?}");
                }
            }
            Ok(Message::Err {
                err_code, err_msg, ..
            }) => {
                let for_init = pending.front().is_some_and(|after_routes| {
                    !after_routes
                        && err_code != codes::NOT_FOUND
                        && err_code != codes::INVALID_MESSAGE
                });
                let (code, message) = match handled {
                    Handled::InitAnswered(Err(Error::Server { code, message })) if for_init => {
                        pending.pop_front();
                        (code, message)
                    }
                    Handled::Event(Event::Error(Error::Server { code, message })) if !for_init => {
                        (code, message)
                    }
                    other => panic!("ERR {err_code} (for the INIT: {for_init}) → {other:?}"),
                };
                assert_eq!((code, message), (err_code, err_msg));
            }
        }
        assert_eq!(inbound.pending_inits(), pending.len(), "pending INITs");
    }
}
