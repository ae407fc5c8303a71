//! Protocol rules of docs/protocol.md sections 1–3, against a real server on 127.0.0.1:0
//! over real WebSocket. Each test is named for the rule it checks.

mod support;

use compendium_messages::{Direction, Message, TYPE_NAMES};
use compendium_server::{Config, NOT_FOUND_TEXT};
use serde_json::json;
use support::{Client, TestServer, deliver, route};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn rule_1_1_any_request_path_is_accepted() {
    let server = TestServer::default().await;
    for path in ["/", "/init", "/some/other/path?x=1"] {
        let mut client = Client::connect(&format!("{}{path}", server.url)).await;
        client.init().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_1_3_binary_frame_gets_400_and_the_connection_stays() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.send_binary(b"{\"type\":\"INIT\"}").await;
    assert_eq!(
        a.expect_err(400).await,
        "binary frames are not supported: send each message as one JSON text frame"
    );
    a.init().await;
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn rule_1_4_oversize_message_closes_1009_and_others_are_unaffected() {
    let mut config = Config::ephemeral();
    config.max_message_bytes = 64 << 10;
    let server = TestServer::start(config).await;
    let mut big = server.client().await;
    let mut other = server.client().await;
    let other_addr = other.init().await;
    big.route(
        &other_addr,
        &format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 << 10)),
    )
    .await;
    let close = big.recv_close().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size);
    assert_eq!(
        close.reason.as_str(),
        "message too big: the limit is 65536 bytes"
    );
    // The other client still works, and received nothing.
    let (errors, _) = other.sync().await;
    assert!(errors.is_empty());
    drop((big, other));
    server.stop().await;
}

#[tokio::test]
async fn rule_1_4_a_message_just_under_the_limit_is_delivered() {
    let mut config = Config::ephemeral();
    config.max_message_bytes = 64 << 10;
    let server = TestServer::start(config).await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    let overhead = route(&b_addr, r#"{"pad":""}"#).len();
    let msg = format!(r#"{{"pad":"{}"}}"#, "x".repeat((64 << 10) - overhead));
    a.route(&b_addr, &msg).await;
    assert_eq!(b.recv_text().await, deliver(&msg));
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_1_init_gives_unique_well_formed_addresses() {
    let server = TestServer::default().await;
    let mut seen = std::collections::HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = server.client().await;
        let addr = c.init().await;
        assert!(
            addr.len() == 32
                && addr
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{addr}"
        );
        assert!(seen.insert(addr));
        clients.push(c);
    }
    assert_eq!(server.handle.live_addresses(), 50);
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn rule_3_1_initresp_has_exactly_type_and_address() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.send(r#"{"type":"INIT"}"#).await;
    let reply = a.recv_json().await;
    let keys: Vec<&String> = reply.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["EpheWssAddr", "type"]);
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn rule_3_2_reinit_retires_the_old_address() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let old = a.init().await;
    let new = a.init().await;
    assert_ne!(old, new);
    b.route(&old, "{}").await;
    assert_eq!(b.expect_err(404).await, NOT_FOUND_TEXT);
    b.route(&new, r#"{"ok":true}"#).await;
    assert_eq!(
        a.recv_text().await,
        r#"{"type":"DELIVER","msg":{"ok":true}}"#
    );
    assert_eq!(server.handle.live_addresses(), 1);
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_3_route_delivers_and_answers_the_sender_nothing() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    a.route(&b_addr, r#"{"hello":"b"}"#).await;
    assert_eq!(
        b.recv_json().await,
        json!({"type": "DELIVER", "msg": {"hello": "b"}})
    );
    let (replies, _) = a.sync().await;
    assert!(replies.is_empty(), "the sender got {replies:?}");
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_3_route_before_init_and_self_route_are_allowed() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    a.route(&b_addr, r#"{"from":"a, never INITed"}"#).await;
    assert_eq!(b.recv_json().await["msg"]["from"], "a, never INITed");
    b.route(&b_addr, r#"{"to":"myself"}"#).await;
    assert_eq!(b.recv_json().await["msg"]["to"], "myself");
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_4_deliver_has_only_type_and_msg_and_msg_bytes_are_identical() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    let msgs = [
        r#"{ "z" : 1,   "a" : [ 1 , 2 ] }"#,
        r#"{"esc":"\u00e9\ud83d\ude00\n\"","raw":"é😀"}"#,
        r#"{"big":123456789012345678901234567890,"f":1.0e-7,"neg":-0}"#,
        r#"{"nested":{"b":{"c":{"d":[{"e":null}]}}},"t":true}"#,
        "{}",
    ];
    for msg in msgs {
        a.route(&b_addr, msg).await;
        assert_eq!(b.recv_text().await, deliver(msg));
    }
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_5_a_thousand_messages_arrive_once_in_order() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    let sender = tokio::spawn(async move {
        for seq in 0..1000 {
            a.route(&b_addr, &format!(r#"{{"seq":{seq}}}"#)).await;
        }
        a
    });
    for seq in 0..1000 {
        assert_eq!(b.recv_json().await["msg"]["seq"], seq);
    }
    let mut a = sender.await.expect("sender");
    let (errors, _) = a.sync().await;
    assert!(errors.is_empty(), "{errors:?}");
    // Nothing more (a 1001st or duplicate) is waiting for b.
    let (extra, _) = b.sync().await;
    assert!(extra.is_empty(), "{extra:?}");
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_6_unknown_address_gets_404_with_the_classic_text() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.route("0123456789abcdef0123456789abcdef", "{}").await;
    let reply = a.recv_json().await;
    assert_eq!(
        reply,
        json!({"type": "ERR", "errCode": 404, "errMsg": "Socket address not found"})
    );
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn rule_3_7_each_invalid_input_gets_a_precise_400_and_the_connection_stays() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    let addr = "0123456789abcdef0123456789abcdef";
    let types: Vec<String> = TYPE_NAMES.iter().map(|t| format!("{t:?}")).collect();
    let unknown_type = format!(
        r#"/type: "HELLO" is not a message type (expected one of {})"#,
        types.join(", ")
    );
    // What INIT may hold is the schema's to say (it may grow optional members).
    let schema: serde_json::Value =
        serde_json::from_str(compendium_messages::SCHEMA_JSON).expect("schema");
    let init_members = schema["oneOf"]
        .as_array()
        .and_then(|arms| {
            arms.iter()
                .find(|a| a["properties"]["type"]["const"] == "INIT")
        })
        .and_then(|init| init["properties"].as_object())
        .map(|props| {
            props
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .expect("INIT in the schema");
    let init_members = format!(r#"/x: unexpected member "x" (INIT has only {init_members})"#);
    let cases = [
        (
            "not JSON",
            "{".to_owned(),
            "invalid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (
            "not an object",
            "[1,2]".to_owned(),
            "a message must be a JSON object, this is an array",
        ),
        (
            "unknown type",
            r#"{"type":"HELLO"}"#.to_owned(),
            unknown_type.as_str(),
        ),
        (
            "missing field",
            format!(r#"{{"type":"ROUTE","EpheWssAddr":"{addr}"}}"#),
            r#"/msg: "msg" is a required property"#,
        ),
        (
            "extra field",
            r#"{"type":"INIT","x":1}"#.to_owned(),
            init_members.as_str(),
        ),
        (
            "wrong type",
            format!(r#"{{"type":"ROUTE","EpheWssAddr":"{addr}","msg":"hi"}}"#),
            r#"/msg: "hi" is not of type "object""#,
        ),
        (
            "bad address",
            r#"{"type":"ROUTE","EpheWssAddr":"ABC","msg":{}}"#.to_owned(),
            r#"/EpheWssAddr: "ABC" does not match "^[0-9a-f]{32}$""#,
        ),
        (
            "duplicate key",
            r#"{"type":"INIT","type":"INIT"}"#.to_owned(),
            r#"duplicate member "type""#,
        ),
        (
            "server type INITRESP",
            format!(r#"{{"type":"INITRESP","EpheWssAddr":"{addr}"}}"#),
            "/type: INITRESP is sent by servers, not clients; a client sends INIT or ROUTE",
        ),
        (
            "server type DELIVER",
            r#"{"type":"DELIVER","msg":{}}"#.to_owned(),
            "/type: DELIVER is sent by servers, not clients; a client sends INIT or ROUTE",
        ),
        (
            "server type ERR",
            r#"{"type":"ERR","errCode":1,"errMsg":""}"#.to_owned(),
            "/type: ERR is sent by servers, not clients; a client sends INIT or ROUTE",
        ),
    ];
    for (what, frame, expected) in cases {
        a.send(&frame).await;
        assert_eq!(a.expect_err(400).await, expected, "{what}");
    }
    a.init().await;
    drop(a);
    server.stop().await;
}

/// Rule 3.12: a client-to-server type that the schema defines but the relay's rules do not
/// implement gets ERR 501 and the connection stays. Version 1 has no such type, so this
/// sends nothing today; `cargo xtask check-schema-growth` adds one (PING) to a copy of the
/// repository and runs this test there, looking for the line it prints.
#[tokio::test]
async fn rule_3_12_a_client_type_the_relay_does_not_implement_gets_501() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    for name in TYPE_NAMES {
        // Only a type with no required member but `type` can be sent without knowing it.
        let bare = format!(r#"{{"type":"{name}"}}"#);
        let Ok(message) = Message::parse(&bare) else {
            continue;
        };
        // INIT and END (version 2, rule 6.7) are implemented.
        if message.direction() != Direction::ClientToServer
            || matches!(message.type_name(), "INIT" | "END")
        {
            continue;
        }
        a.send(&bare).await;
        assert_eq!(
            a.expect_err(501).await,
            format!("/type: this relay does not implement {name} messages; nothing was done")
        );
        println!("rule 3.12: {name} -> ERR 501");
    }
    a.init().await;
    drop(a);
    server.stop().await;
}

/// Rule 2.7: a `msg` nested 100 levels deep (itself level 1) is delivered unchanged; one
/// more level gets ERR 400 and nothing is delivered.
#[tokio::test]
async fn rule_2_7_msg_nested_deeper_than_100_levels_is_refused() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    let nested = |levels: usize| {
        let arrays = levels - 1;
        format!(r#"{{"d":{}{}}}"#, "[".repeat(arrays), "]".repeat(arrays))
    };
    let hundred = nested(100);
    a.route(&b_addr, &hundred).await;
    assert_eq!(b.recv_text().await, deliver(&hundred));
    a.route(&b_addr, &nested(101)).await;
    assert_eq!(
        a.expect_err(400).await,
        "/msg: nested more than 100 levels deep (msg itself is level 1; rule 2.7)"
    );
    let (got, _) = b.sync().await;
    assert!(got.is_empty(), "{got:?}");
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_7_invalid_route_is_not_delivered() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    a.send(&format!(
        r#"{{"type":"ROUTE","EpheWssAddr":"{b_addr}","msg":{{}},"extra":1}}"#
    ))
    .await;
    a.expect_err(400).await;
    let (got, _) = b.sync().await;
    assert!(got.is_empty(), "{got:?}");
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_8_a_reader_that_never_reads_makes_routes_503_and_nothing_is_lost() {
    let mut config = Config::ephemeral();
    config.max_queue = 4;
    config.max_queue_bytes = 256 << 10;
    let server = TestServer::start(config).await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let b_addr = b.init().await;
    // Flood b (which does not read) until the relay refuses; socket buffers absorb the
    // first few megabytes, so keep going until a 503 comes back.
    let pad = "x".repeat(32 << 10);
    let mut sent = 0u32;
    let mut refused = 0u32;
    while refused == 0 && sent < 20_000 {
        for _ in 0..32 {
            a.route(&b_addr, &format!(r#"{{"seq":{sent},"pad":"{pad}"}}"#))
                .await;
            sent += 1;
        }
        let (errors, _) = a.sync().await;
        for e in &errors {
            assert_eq!(e["errCode"], 503, "{e}");
        }
        refused += u32::try_from(errors.len()).expect("small");
    }
    assert!(refused > 0, "no 503 after {sent} messages");
    let refused_count = refused;
    // b now reads: every accepted message, in order, none of the refused, no duplicates.
    let mut delivered = Vec::new();
    while delivered.len() < (sent - refused_count) as usize {
        delivered.push(b.recv_json().await["msg"]["seq"].as_u64().expect("seq"));
    }
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    a.route(&b_addr, r#"{"end":true}"#).await;
    assert_eq!(b.recv_json().await["msg"], json!({"end": true}));
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_9_over_the_rate_limit_gets_429() {
    let mut config = Config::ephemeral();
    config.max_msgs_per_sec = Some(5);
    let server = TestServer::start(config).await;
    let mut a = server.client().await;
    for _ in 0..20 {
        a.send(r#"{"type":"INIT"}"#).await;
    }
    let mut limited = 0;
    for _ in 0..20 {
        let reply = a.recv_json().await;
        if reply["type"] == "ERR" {
            assert_eq!(reply["errCode"], 429, "{reply}");
            limited += 1;
        }
    }
    assert!(limited >= 1, "no 429 among 20 messages at 5/s");
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn rule_3_10_address_released_on_close_handshake() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let a_addr = a.init().await;
    a.ws.close(None).await.expect("close");
    while a.next_frame().await.is_some() {}
    server.handle.wait_for_ended_connections(1).await;
    b.route(&a_addr, "{}").await;
    assert_eq!(b.expect_err(404).await, NOT_FOUND_TEXT);
    assert_eq!(server.handle.live_addresses(), 0);
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_10_address_released_when_tcp_drops_without_a_close_frame() {
    let server = TestServer::default().await;
    let mut b = server.client().await;
    for ended in 1..=2 {
        let mut a = server.client().await;
        let a_addr = a.init().await;
        // First a plain TCP close (FIN), then a TCP reset, as when the peer process is
        // killed. Neither sends a WebSocket close frame.
        if ended == 2 {
            a.vanish();
        } else {
            drop(a);
        }
        server.handle.wait_for_ended_connections(ended).await;
        b.route(&a_addr, "{}").await;
        assert_eq!(b.expect_err(404).await, NOT_FOUND_TEXT);
    }
    assert_eq!(server.handle.live_addresses(), 0);
    drop(b);
    server.stop().await;
}

#[tokio::test]
async fn rule_3_10_many_connect_init_disconnect_cycles_leave_nothing_behind() {
    let server = TestServer::default().await;
    let cycles = 300u64;
    for i in 0..cycles {
        let mut client = server.client().await;
        client.init().await;
        if i % 2 == 0 {
            // Half of them vanish with a TCP reset, half close the WebSocket properly.
            client.vanish();
        } else {
            client.close().await;
        }
    }
    server.handle.wait_for_ended_connections(cycles).await;
    assert_eq!(server.handle.live_addresses(), 0);
    assert_eq!(server.handle.open_connections(), 0);
    let metrics = server.handle.metrics_text();
    assert!(metrics.contains("compendium_addresses_live 0"), "{metrics}");
    assert!(
        metrics.contains("compendium_connections_open 0"),
        "{metrics}"
    );
    server.stop().await;
}
