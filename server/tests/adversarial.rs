//! Attacks a public relay will see, each against a real server on 127.0.0.1:0; every
//! test also checks that a bystander connection is unaffected. (Hardening, issue 7.)

mod support;

use std::collections::HashSet;

use support::{Client, PATIENCE, TestServer, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deterministic garbage (xorshift), so a failure reproduces.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The bystander still gets served: INIT, then a message to itself.
async fn bystander_is_fine(client: &mut Client) {
    let me = client.init().await;
    client.route(&me, r#"{"still":"fine"}"#).await;
    assert_eq!(
        client.recv_text().await,
        r#"{"type":"DELIVER","msg":{"still":"fine"}}"#
    );
}

async fn close_code(stream: &mut tokio::net::TcpStream) -> Option<u16> {
    let frames = raw::read_until_eof(stream).await;
    frames.iter().find_map(|f| f.close()).map(|(code, _)| code)
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_dropped() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("ws://"))
        .await
        .expect("connect");
    tcp.write_all(&garbage(4096, 7)).await.expect("write");
    // The relay must hang up (a clean EOF or a reset; either way, in time).
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the relay hangs up");
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn garbage_after_a_valid_handshake_closes_1002() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut stream = raw::connect(&server.url).await;
    // 0xF3: FIN with all three reserved bits set and a reserved opcode — never valid.
    let mut bytes = vec![0xF3];
    bytes.extend(garbage(2048, 11));
    stream.write_all(&bytes).await.expect("write");
    assert_eq!(close_code(&mut stream).await, Some(1002));
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut stream = raw::connect(&server.url).await;
    stream
        .write_all(&raw::frame(1, &[b'{', 0xFF, 0xFE, b'}']))
        .await
        .expect("write");
    assert_eq!(close_code(&mut stream).await, Some(1007));
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn a_reserved_opcode_closes_1002() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut stream = raw::connect(&server.url).await;
    stream.write_all(&raw::frame(3, b"x")).await.expect("write");
    assert_eq!(close_code(&mut stream).await, Some(1002));
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_1002() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut stream = raw::connect(&server.url).await;
    let text = br#"{"type":"INIT"}"#;
    let mut frame = vec![0x81, u8::try_from(text.len()).expect("short")];
    frame.extend_from_slice(text);
    stream.write_all(&frame).await.expect("write");
    assert_eq!(close_code(&mut stream).await, Some(1002));
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_announcing_2_pow_63_bytes_is_refused_without_allocating_it() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut stream = raw::connect(&server.url).await;
    // Text frame, masked, 64-bit length 2^63 (the spec even forbids the top bit).
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(b"{}");
    stream.write_all(&frame).await.expect("write");
    // Refused (too big, or malformed) — and the process is still here to say so.
    let code = close_code(&mut stream).await;
    assert!(matches!(code, Some(1009 | 1002)), "{code:?}");
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn hostile_json_gets_precise_400s_and_the_connection_stays() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let mut a = server.client().await;
    let deep = "[".repeat(100_000);
    let long = format!(r#"{{"type":"INIT","pad":"{}"}}"#, "x".repeat(900 << 10));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "100,000 nested [",
            deep,
            "a message must be a JSON object, this is an array",
        ),
        (
            "900 KiB string",
            long,
            r#"/pad: unexpected member "pad" (INIT has only "type")"#,
        ),
        (
            "900 KiB type name",
            format!(r#"{{"type":"{}"}}"#, "t".repeat(900 << 10)),
            r#"/type: "tttt"#,
        ),
        (
            // Found by the message_parse fuzz target: member names were quoted in full.
            "900 KiB member name",
            format!(r#"{{"type":"INIT","{}":1}}"#, "n".repeat(900 << 10)),
            "/nnnn",
        ),
        (
            "duplicate keys",
            r#"{"type":"INIT","type":"ROUTE"}"#.into(),
            r#"duplicate member "type""#,
        ),
        (
            "lone surrogate",
            r#"{"type":"\ud800"}"#.into(),
            "invalid JSON: in member \"type\": ",
        ),
        (
            "huge number",
            r#"{"type":"INIT","n":1e999999}"#.into(),
            "invalid JSON: in member \"n\": number out of range",
        ),
    ];
    for (what, frame, expected) in cases {
        a.send(&frame).await;
        let message = a.expect_err(400).await;
        assert!(message.starts_with(expected), "{what}: {message}");
        assert!(
            message.len() < 1024,
            "{what}: a {}-byte error message",
            message.len()
        );
    }
    a.init().await;
    bystander_is_fine(&mut bystander).await;
    drop((a, bystander));
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_1009() {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let stream = raw::connect(&server.url).await;
    let text = format!(r#"{{"type":"INIT","pad":"{}"}}"#, "x".repeat(1 << 20));
    // Write in the background: the relay stops reading once it has seen the length.
    let (mut reader, mut writer) = stream.into_split();
    let frame = raw::frame(1, text.as_bytes());
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&frame).await;
    });
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut bytes))
        .await
        .expect("the relay closes");
    sending.abort();
    let close = raw::parse(&bytes)
        .iter()
        .find_map(raw::ServerFrame::close)
        .map(|(code, _)| code);
    assert_eq!(close, Some(1009));
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test]
async fn addresses_do_not_repeat_and_their_bits_are_balanced() {
    let server = TestServer::default().await;
    let mut client = server.client().await;
    const INITS: usize = 100_000;
    let mut seen = HashSet::with_capacity(INITS);
    let mut ones = 0u64;
    for _ in 0..INITS / 1000 {
        for _ in 0..1000 {
            client.send(r#"{"type":"INIT"}"#).await;
        }
        for _ in 0..1000 {
            let reply = client.recv_json().await;
            let address = reply["EpheWssAddr"]
                .as_str()
                .expect("an address")
                .to_owned();
            let bits = u128::from_str_radix(&address, 16).expect("hex");
            ones += u64::from(bits.count_ones());
            assert!(seen.insert(address), "an address repeated");
        }
    }
    let share = ones as f64 / (INITS as f64 * 128.0);
    assert!(
        (share - 0.5).abs() < 0.005,
        "one bits: {share:.4} of all bits"
    );
    assert_eq!(
        server.handle.live_addresses(),
        1,
        "each INIT retired the one before"
    );
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_404_does_not_tell_a_retired_address_from_an_unknown_one() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let retired = a.init().await;
    a.init().await;
    b.route(&retired, "{}").await;
    let for_retired = b.recv_text().await;
    b.route("0123456789abcdef0123456789abcdef", "{}").await;
    let for_unknown = b.recv_text().await;
    assert_eq!(for_retired, for_unknown);
    drop((a, b));
    server.stop().await;
}
