//! The PC/companion exchange again, with the blocking client: no async code at all, as
//! in a desktop application whose main thread belongs to its UI toolkit.
//!
//! Run it (starts its own relay on a free port):
//!     cargo run -p compendium-client --example pc_companion_blocking
//! or against a running relay:
//!     cargo run -p compendium-client --example pc_companion_blocking -- ws://127.0.0.1:8001

use std::time::Duration;

use compendium_client::blocking::Client;
use compendium_client::{Event, Result};
use serde_json::json;

fn main() -> Result<()> {
    let _relay; // keeps an embedded relay alive when no URL is given
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let (runtime, url) = embedded_relay();
            _relay = runtime;
            url
        }
    };
    println!("relay: {url}");

    let mut pc = Client::connect(&url)?;
    let mut phone = Client::connect(&url)?;
    let pc_addr = pc.init()?;
    let phone_addr = phone.init()?;

    // The phone reacts to requests from a listener callback, as the original client did.
    let responder = Client::connect(&url)?;
    phone.set_listener(move |event| {
        if let Event::Deliver(msg) = event {
            let request: serde_json::Value = msg.decode().unwrap_or_default();
            println!("phone received: {request}");
            if let Some(Ok(reply_to)) = request["reply_to"].as_str().map(str::parse) {
                let _ =
                    responder.route(&reply_to, &json!({"signature": "MEUCIQDx3v0s9yTqZ2i1xQ=="}));
            }
        }
    });

    pc.route(
        &phone_addr,
        &json!({"reply_to": pc_addr.to_string(), "challenge": "q7XkQ1cZ8bW0yTn3"}),
    )?;
    match pc.recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Deliver(msg)) => println!("pc received: {msg}"),
        other => println!("pc got something else: {other:?}"),
    }
    pc.close()?;
    Ok(())
}

/// A relay on a free local port, on its own runtime, for running with no setup.
fn embedded_relay() -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the embedded relay");
    let url = runtime.block_on(async {
        let server = compendium_server::Server::bind(compendium_server::Config::ephemeral())
            .await
            .expect("bind an embedded relay on 127.0.0.1");
        let url = format!("ws://{}", server.local_addrs()[0]);
        tokio::spawn(server.run(std::future::pending()));
        url
    });
    (runtime, url)
}
