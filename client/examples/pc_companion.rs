//! A PC and a companion phone pair up through a relay and do one request/response (async).
//!
//! Run it (starts its own relay on a free port):
//!     cargo run -p compendium-client --example pc_companion
//! or against a running relay:
//!     cargo run -p compendium-server &   # ws://127.0.0.1:8001
//!     cargo run -p compendium-client --example pc_companion -- ws://127.0.0.1:8001

use compendium_client::{Client, Result};
use serde::{Deserialize, Serialize};

/// What the PC asks of the phone (Compendium carries such blobs as base64 strings).
#[derive(Serialize, Deserialize, Debug)]
struct SignRequest {
    reply_to: String,
    pc_public_key: String,
    challenge: String,
}

/// The phone's answer.
#[derive(Serialize, Deserialize, Debug)]
struct SignResponse {
    signature: String,
    encrypted_payload: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => embedded_relay().await,
    };
    println!("relay: {url}");

    // Both devices connect and get ephemeral addresses.
    let mut pc = Client::connect(&url).await?;
    let mut phone = Client::connect(&url).await?;
    let pc_addr = pc.init().await?;
    let phone_addr = phone.init().await?;
    println!("pc {pc_addr}, phone {phone_addr} (in real life: exchanged via a QR code)");

    // The PC asks; the phone answers to the address given in the request.
    pc.route(
        &phone_addr,
        &SignRequest {
            reply_to: pc_addr.to_string(),
            pc_public_key: "TUlJQklqQU5CZ2txaGtpRzl3MEJBUUVGQUFPQ0FROEFNSUlCQ2dLQ0FRRUE=".into(),
            challenge: "q7XkQ1cZ8bW0yTn3".into(),
        },
    )
    .await?;
    let request: SignRequest = phone.recv_json().await?;
    println!("phone received: {request:?}");
    let reply_to = request
        .reply_to
        .parse()
        .map_err(|e| compendium_client::Error::InvalidFrame(format!("bad reply_to: {e}")))?;
    phone
        .route(
            &reply_to,
            &SignResponse {
                signature: "MEUCIQDx3v0s9yTqZ2i1xQ==".into(),
                encrypted_payload: "8J+UkCBzZWNyZXQgZGF0YQ==".into(),
            },
        )
        .await?;
    let response: SignResponse = pc.recv_json().await?;
    println!("pc received: {response:?}");

    phone.close().await?;
    pc.close().await?;
    Ok(())
}

/// A relay on a free local port, for running the example with no setup.
async fn embedded_relay() -> String {
    let server = compendium_server::Server::bind(compendium_server::Config::ephemeral())
        .await
        .expect("bind an embedded relay on 127.0.0.1");
    let url = format!("ws://{}", server.local_addrs()[0]);
    tokio::spawn(server.run(std::future::pending()));
    url
}
