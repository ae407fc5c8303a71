//! The blocking client, used from plain `#[test]` functions with no async runtime.

mod support;

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use compendium_client::blocking::Client;
use compendium_client::{Error, Event};
use serde_json::json;
use support::{PATIENCE, relay_in_background};

#[test]
fn init_route_and_deliver_without_a_runtime() {
    let (_relay, url) = relay_in_background();
    let pc = Client::connect(&url).expect("connect");
    let mut phone = Client::connect(&url).expect("connect");
    let addr = phone.init().expect("init");
    pc.route(&addr, &json!({"hello": "phone"})).expect("route");
    match phone.recv_timeout(PATIENCE) {
        Ok(Event::Deliver(msg)) => assert_eq!(msg.as_str(), r#"{"hello":"phone"}"#),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        phone.recv_timeout(Duration::from_millis(50)),
        Err(RecvTimeoutError::Timeout)
    ));
    pc.close().expect("close");
}

#[test]
fn errors_carry_the_relay_code() {
    let (_relay, url) = relay_in_background();
    let mut client = Client::connect(&url).expect("connect");
    client
        .route(
            &"0123456789abcdef0123456789abcdef".parse().expect("address"),
            &json!({}),
        )
        .expect("route");
    match client.recv_timeout(PATIENCE) {
        Ok(Event::Error(err)) => assert_eq!(err.server_code(), Some(404)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.route(
            &"0123456789abcdef0123456789abcdef".parse().expect("a"),
            &json!([1])
        ),
        Err(Error::InvalidPayload(_))
    ));
}

#[test]
fn iterator_and_typed_receive() {
    let (_relay, url) = relay_in_background();
    let pc = Client::connect(&url).expect("connect");
    let mut phone = Client::connect(&url).expect("connect");
    let addr = phone.init().expect("init");
    for n in 0..3 {
        pc.route(&addr, &json!({ "n": n })).expect("route");
    }
    let first: serde_json::Value = phone.recv_json().expect("json");
    assert_eq!(first["n"], 0);
    let rest: Vec<String> = phone
        .iter()
        .take(2)
        .map(|event| match event {
            Event::Deliver(msg) => msg.as_str().to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rest, [r#"{"n":1}"#, r#"{"n":2}"#]);
}

#[test]
fn a_listener_callback_receives_events() {
    let (_relay, url) = relay_in_background();
    let pc = Client::connect(&url).expect("connect");
    let mut phone = Client::connect(&url).expect("connect");
    let addr = phone.init().expect("init");
    let (tx, rx) = std::sync::mpsc::channel();
    phone.set_listener(move |event| {
        if let Event::Deliver(msg) = event {
            let _ = tx.send(msg.as_str().to_owned());
        }
    });
    pc.route(&addr, &json!({"via": "listener"})).expect("route");
    assert_eq!(
        rx.recv_timeout(PATIENCE).expect("delivered"),
        r#"{"via":"listener"}"#
    );
    assert!(matches!(
        phone.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn drop_sends_everything_queued_then_closes() {
    let (_relay, url) = relay_in_background();
    let mut phone = Client::connect(&url).expect("connect");
    let addr = phone.init().expect("init");
    {
        let pc = Client::connect(&url).expect("connect");
        for n in 0..500 {
            pc.route(&addr, &json!({ "n": n })).expect("route");
        }
    } // dropped here: graceful close, thread joined
    for n in 0..500 {
        let msg: serde_json::Value = phone.recv_json().expect("json");
        assert_eq!(msg["n"], n);
    }
}

#[test]
fn connect_errors_surface_immediately() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    assert!(matches!(
        Client::connect(&format!("ws://{free}")),
        Err(Error::Connect(_))
    ));
    assert!(matches!(
        Client::connect("not a url"),
        Err(Error::InvalidUrl(_))
    ));
}

// Multi-thread: a blocking call blocks its thread, so the relay in this test must run on
// other threads (on a current-thread runtime it would wait for the very thread it blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn also_works_when_called_inside_an_async_runtime() {
    let (url, _) = support::relay(compendium_server::Config::ephemeral()).await;
    let client = Client::connect(&url).expect("connect");
    client.init().expect("init");
    client.close().expect("close");
}
