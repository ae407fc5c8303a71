//! Resumable mode against the real relay, through a proxy that breaks the link for real
//! (TCP reset, half-open stall): the oracle counts every message both ways — none lost,
//! none repeated, order kept — and the application hears of each resume.

mod support;

use std::time::Duration;

use compendium_client::{Client, Event, blocking};
use compendium_server::Config;
use serde_json::{Value, json};
use support::link::Link;
use support::{PATIENCE, relay};

/// Collect `count` delivered `n`s from `client`, counting resumes; fails on anything else.
async fn collect(client: &mut Client, count: usize) -> (Vec<u64>, usize) {
    let mut got = Vec::new();
    let mut resumes = 0;
    while got.len() < count {
        let event = tokio::time::timeout(PATIENCE, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived: {got:?}", got.len()));
        match event {
            Some(Event::Deliver(msg)) => {
                let value: Value = msg.decode().expect("JSON");
                got.push(value["n"].as_u64().expect("n"));
            }
            Some(Event::Resumed { .. }) => resumes += 1,
            other => panic!("unexpected {other:?} after {got:?}"),
        }
    }
    (got, resumes)
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[tokio::test]
async fn a_reset_link_is_resumed_and_nothing_is_lost_or_repeated_either_way() {
    let (url, _relay) = relay(Config::ephemeral()).await;
    let link = Link::start(&url).await;
    let mut phone = Client::builder()
        .resumable(true)
        .connect(&link.url)
        .await
        .expect("phone");
    let mut pc = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect("pc");
    let phone_addr = phone.init().await.expect("phone INIT");
    let pc_addr = pc.init().await.expect("pc INIT");
    const N: u64 = 200;
    for n in 1..=N {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("pc route");
        phone
            .route(&pc_addr, &json!({ "n": n }))
            .await
            .expect("phone route");
        if n == N / 2 {
            link.reset_all();
        }
    }
    let (to_phone, resumes) = collect(&mut phone, N as usize).await;
    assert_eq!(to_phone, one_to(N), "PC to phone: exactly once, in order");
    assert_eq!(resumes, 1, "the phone resumed once");
    let (to_pc, _) = collect(&mut pc, N as usize).await;
    assert_eq!(to_pc, one_to(N), "phone to PC: exactly once, in order");
    assert_eq!(link.accepted(), 2);
    phone.close().await.expect("close");
    pc.close().await.expect("close");
}

#[tokio::test]
async fn a_half_open_link_is_noticed_by_keepalive_and_the_session_taken_over() {
    let (url, _relay) = relay(Config::ephemeral()).await;
    let link = Link::start(&url).await;
    let mut phone = Client::builder()
        .resumable(true)
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(500)))
        .connect(&link.url)
        .await
        .expect("phone");
    let pc = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect("pc");
    let phone_addr = phone.init().await.expect("INIT");
    let _ = pc.init().await.expect("INIT");
    for n in 1..=10 {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("route");
    }
    let (first, _) = collect(&mut phone, 10).await;
    assert_eq!(first, one_to(10));
    // The link goes silent both ways; the relay still believes the old connection alive.
    link.stall_all();
    for n in 11..=30 {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("route");
    }
    let (rest, resumes) = collect(&mut phone, 20).await;
    assert_eq!(
        rest,
        (11..=30).collect::<Vec<_>>(),
        "written into the dead link, replayed once"
    );
    assert_eq!(resumes, 1);
    phone.close().await.expect("close");
}

#[tokio::test]
async fn a_session_that_cannot_come_back_is_reported_never_replaced() {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::from_secs(1);
    config.sessions.hold = Duration::from_millis(500);
    let (url, relay) = relay(config).await;
    let mut phone = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect("phone");
    phone.init().await.expect("INIT");
    relay.shutdown(); // the relay is gone: nothing to resume on within the grace
    let mut lost = None;
    while let Some(event) = tokio::time::timeout(PATIENCE, phone.next_event())
        .await
        .expect("events")
    {
        match event {
            Event::SessionLost { reason } => lost = Some(reason),
            Event::Closed { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let reason = lost.expect("a SessionLost event");
    assert!(
        reason.contains("could not resume within the session's grace"),
        "{reason}"
    );
}

#[tokio::test]
async fn resumable_mode_against_a_version_1_relay_fails_clearly() {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::ZERO;
    let (url, _relay) = relay(config).await;
    let err = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("does not speak protocol version 2"), "{text}");
}

#[test]
fn the_blocking_client_resumes_too() {
    let (runtime, url) = support::relay_in_background();
    let link = runtime.block_on(Link::start(&url));
    let builder = Client::builder().resumable(true);
    let mut phone = blocking::Client::connect_with(&builder, &link.url).expect("connect");
    let address = phone.init().expect("INIT");
    phone.route(&address, &json!({ "n": 1 })).expect("route");
    let first: Value = phone.recv_json().expect("first");
    assert_eq!(first["n"], 1);
    link.reset_all();
    phone
        .route(&address, &json!({ "n": 2 }))
        .expect("route after reset");
    let second: Value = phone.recv_json().expect("second, after the resume");
    assert_eq!(second["n"], 2);
    phone.close().expect("close");
}
