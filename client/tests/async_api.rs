//! The async client against a real relay on 127.0.0.1:0 (and scripted fakes).

mod support;

use std::time::Duration;

use compendium_client::{Client, ConnectStage, Error, Event};
use compendium_server::Config;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{PATIENCE, fake_relay, mute_relay, relay};

async fn next(client: &mut Client) -> Event {
    tokio::time::timeout(PATIENCE, client.next_event())
        .await
        .expect("an event")
        .expect("open")
}

#[tokio::test]
async fn init_route_and_deliver() {
    let (url, _) = relay(Config::ephemeral()).await;
    let pc = Client::connect(&url).await.expect("connect");
    let mut phone = Client::connect(&url).await.expect("connect");
    let phone_addr = phone.init().await.expect("init");
    pc.route(&phone_addr, &json!({"hello": "phone", "n": [1, 2]}))
        .await
        .expect("route");
    match next(&mut phone).await {
        Event::Deliver(msg) => assert_eq!(msg.as_str(), r#"{"hello":"phone","n":[1,2]}"#),
        other => panic!("{other:?}"),
    }
    pc.close().await.expect("close");
    phone.close().await.expect("close");
}

/// Rule 2.7: whatever the relay forwards — at most 100 levels — the client decodes; a
/// deeper msg is refused before it is sent.
#[tokio::test]
async fn the_deepest_msg_the_relay_forwards_decodes_and_a_deeper_one_is_refused_locally() {
    let (url, _) = relay(Config::ephemeral()).await;
    let pc = Client::connect(&url).await.expect("connect");
    let mut phone = Client::connect(&url).await.expect("connect");
    let addr = phone.init().await.expect("init");
    let nested = |levels: usize| {
        let mut value = json!({});
        for level in 1..levels {
            value = if level % 2 == 0 {
                json!({ "o": value })
            } else {
                json!([value])
            };
        }
        json!({ "d": value })
    };
    let deepest = nested(99); // {"d": ...99 levels...}: 100 in all
    pc.route(&addr, &deepest).await.expect("route");
    let got: serde_json::Value = phone.recv_json().await.expect("decodes");
    assert_eq!(got, deepest);
    match pc.route(&addr, &nested(100)).await {
        Err(Error::InvalidPayload(err)) => assert_eq!(
            err.to_string(),
            "a payload may nest at most 100 levels deep, itself being level 1 (rule 2.7)"
        ),
        other => panic!("{other:?}"),
    }
    pc.close().await.expect("close");
    phone.close().await.expect("close");
}

#[tokio::test]
async fn recv_json_decodes_into_a_type() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct KeyOffer {
        public_key: String,
        seq: u32,
    }
    let (url, _) = relay(Config::ephemeral()).await;
    let pc = Client::connect(&url).await.expect("connect");
    let mut phone = Client::connect(&url).await.expect("connect");
    let addr = phone.init().await.expect("init");
    let offer = KeyOffer {
        public_key: "bXkga2V5".into(),
        seq: 7,
    };
    pc.route(&addr, &offer).await.expect("route");
    assert_eq!(phone.recv_json::<KeyOffer>().await.expect("decode"), offer);
    pc.route(&addr, &json!({"unexpected": true}))
        .await
        .expect("route");
    assert!(matches!(
        phone.recv_json::<KeyOffer>().await,
        Err(Error::Decode(_))
    ));
}

#[tokio::test]
async fn reinit_gives_a_new_address() {
    let (url, _) = relay(Config::ephemeral()).await;
    let client = Client::connect(&url).await.expect("connect");
    let first = client.init().await.expect("init");
    let second = client.init().await.expect("init");
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_404_is_an_error_event_carrying_the_code() {
    let (url, _) = relay(Config::ephemeral()).await;
    let mut client = Client::connect(&url).await.expect("connect");
    let nobody = "0123456789abcdef0123456789abcdef".parse().expect("address");
    client.route(&nobody, &json!({})).await.expect("queued");
    match next(&mut client).await {
        Event::Error(err) => {
            assert_eq!(err.server_code(), Some(404));
            assert_eq!(err.to_string(), "relay error 404: Socket address not found");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_non_object_msg_is_refused_before_sending() {
    let (url, _) = relay(Config::ephemeral()).await;
    let client = Client::connect(&url).await.expect("connect");
    let to = client.init().await.expect("init");
    for bad in [json!([1, 2]), json!("text"), json!(null), json!(5)] {
        match client.route(&to, &bad).await {
            Err(Error::InvalidPayload(err)) => assert!(
                err.to_string()
                    .starts_with("a payload must be a JSON object")
            ),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn close_right_after_10000_routes_loses_nothing() {
    // The original client's race: close() could tear the socket down while the last
    // messages were still being sent. Here close is queued behind them by construction.
    let mut config = Config::ephemeral();
    config.max_queue = 20_000; // this test is about the client, not relay backpressure
    let (url, _) = relay(config).await;
    let sender = Client::connect(&url).await.expect("connect");
    let mut receiver = Client::connect(&url).await.expect("connect");
    let to = receiver.init().await.expect("init");
    for seq in 0..10_000u32 {
        sender
            .route(&to, &json!({ "seq": seq }))
            .await
            .expect("route");
    }
    sender.close().await.expect("close");
    for seq in 0..10_000u64 {
        let msg: serde_json::Value = tokio::time::timeout(PATIENCE, receiver.recv_json())
            .await
            .expect("in time")
            .expect("msg");
        assert_eq!(msg["seq"], seq);
    }
}

#[tokio::test]
async fn an_invalid_frame_from_the_relay_is_an_error_event() {
    let url = fake_relay(vec![
        Some(r#"{"type":"DELIVER","msg":{},"extra":1}"#),
        Some("not json"),
        None,
        Some(r#"{"type":"ROUTE","EpheWssAddr":"0123456789abcdef0123456789abcdef","msg":{}}"#),
        Some(r#"{"type":"INITRESP","EpheWssAddr":"0123456789abcdef0123456789abcdef"}"#),
        Some(r#"{"type":"DELIVER","msg":{"still":"works"}}"#),
    ])
    .await;
    let mut client = Client::connect(&url).await.expect("connect");
    client
        .route(
            &"0123456789abcdef0123456789abcdef".parse().expect("address"),
            &json!({}),
        )
        .await
        .expect("route");
    let mut errors = Vec::new();
    for _ in 0..5 {
        match next(&mut client).await {
            Event::Error(err @ Error::InvalidFrame(_)) => errors.push(err.to_string()),
            other => panic!("{other:?}"),
        }
    }
    // The members DELIVER allows are the schema's to list (they may grow).
    assert!(
        errors[0].starts_with(
            r#"the relay sent an invalid message: /extra: unexpected member "extra" (DELIVER has only "#
        ),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[1..],
        [
            "the relay sent an invalid message: invalid JSON: expected ident at line 1 column 2",
            "the relay sent a binary frame; the protocol uses text frames only",
            "the relay sent ROUTE, a message only clients send",
            "the relay sent an INITRESP nobody asked for",
        ]
    );
    match next(&mut client).await {
        Event::Deliver(msg) => assert_eq!(msg.as_str(), r#"{"still":"works"}"#),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_err_answering_init_fails_init_with_the_code() {
    let url = fake_relay(vec![Some(
        r#"{"type":"ERR","errCode":429,"errMsg":"slow down"}"#,
    )])
    .await;
    let client = Client::connect(&url).await.expect("connect");
    match client.init().await {
        Err(err) => {
            assert_eq!(err.server_code(), Some(429));
            assert_eq!(err.to_string(), "relay error 429: slow down");
        }
        Ok(addr) => panic!("got {addr}"),
    }
}

#[tokio::test]
async fn a_dead_connection_is_reported_closed_within_the_idle_timeout() {
    let (url, _task) = mute_relay().await;
    let mut client = Client::builder()
        .ping_interval(Some(Duration::from_millis(50)))
        .idle_timeout(Some(Duration::from_millis(300)))
        .connect(&url)
        .await
        .expect("connect");
    match next(&mut client).await {
        Event::Closed { code: None, reason } => {
            assert_eq!(reason, "no frame from the relay for 300ms")
        }
        other => panic!("{other:?}"),
    }
    assert!(client.next_event().await.is_none());
    assert!(matches!(client.init().await, Err(Error::Closed { .. })));
}

#[tokio::test]
async fn the_relay_closing_is_the_last_event() {
    let (url, handle) = relay(Config::ephemeral()).await;
    let mut client = Client::connect(&url).await.expect("connect");
    client.init().await.expect("init");
    handle.shutdown();
    match next(&mut client).await {
        Event::Closed { code, reason } => {
            assert_eq!(code, Some(1001));
            assert_eq!(reason, "server shutting down");
        }
        other => panic!("{other:?}"),
    }
    assert!(client.next_event().await.is_none());
}

#[tokio::test]
async fn connection_failures_are_precise() {
    match Client::connect("http://127.0.0.1:1").await {
        Err(Error::InvalidUrl(message)) => {
            assert!(message.contains("must be ws:// or wss://"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    match Client::connect(&format!("ws://{free_port}")).await {
        Err(Error::Connect(err)) => {
            assert_eq!(err.stage(), ConnectStage::Tcp, "{err}");
            assert_eq!(
                err.io_kind(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "{err}"
            );
            assert!(
                err.to_string().starts_with(&format!("{free_port}: ")),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut config = Config::ephemeral();
    config.max_connections = 1;
    let (url, _) = relay(config).await;
    let _first = Client::connect(&url).await.expect("connect");
    match Client::connect(&url).await {
        Err(Error::Connect(err)) => {
            assert_eq!(err.stage(), ConnectStage::WebSocket, "{err}");
            assert_eq!(err.http_status(), Some(503), "{err}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_send_stuck_on_a_dead_link_ends_with_it_and_holds_no_caller() {
    // The link goes silent with its TCP buffers full: the reader gives it up after the
    // idle timeout; a write stuck behind the full buffers must end with it, or every
    // later `route` would wait for ever on a full command queue.
    let (url, _relay) = relay(Config::ephemeral()).await;
    let link = support::link::Link::start(&url).await;
    let mut client = Client::builder()
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(500)))
        .connect(&link.url)
        .await
        .expect("connect");
    let address = client.init().await.expect("INIT");
    link.stall_all();
    // 3000 × 16 KiB: more than the buffers and the command queue (1024) hold.
    let pad = "x".repeat(16 << 10);
    let sender = client.sender();
    let sending = tokio::spawn(async move {
        let mut refused = 0;
        for n in 0..3000 {
            if sender
                .route(&address, &json!({ "n": n, "pad": pad }))
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        refused
    });
    let refused = tokio::time::timeout(PATIENCE, sending)
        .await
        .expect("no route waits for ever on the dead link")
        .expect("sending task");
    assert!(refused > 0, "ROUTEs after the link died are refused");
    loop {
        let event = tokio::time::timeout(PATIENCE, client.next_event())
            .await
            .expect("an event");
        if matches!(event, Some(Event::Closed { .. }) | None) {
            break;
        }
    }
}
