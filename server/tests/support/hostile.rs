//! The input attacks a public relay will see — bytes that are not a handshake, frames no
//! client may send, JSON built to hurt a parser — each played on a fresh connection of its
//! own. `adversarial.rs` plays each once against an in-process server and checks the
//! answer; `attacks.rs` plays them all over and over against the server binary and checks
//! that memory and descriptors come back.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Client, PATIENCE, raw};

/// Deterministic garbage (xorshift), so a failure reproduces.
pub fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The close code of the frames the server sends until it hangs up.
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    first_close_code(&raw::read_until_eof(stream).await)
}

fn first_close_code(frames: &[raw::ServerFrame]) -> Option<u16> {
    frames
        .iter()
        .find_map(raw::ServerFrame::close)
        .map(|(code, _)| code)
}

/// Random bytes instead of an opening handshake; returns once the relay has hung up (a
/// clean EOF or a reset: either way, in time).
pub async fn garbage_instead_of_a_handshake(url: &str) {
    let mut tcp = TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .expect("connect");
    tcp.write_all(&garbage(4096, 7)).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the relay hangs up");
}

/// A valid handshake, then random bytes led by 0xF3 (FIN, all three reserved bits and a
/// reserved opcode: never valid). Returns the close code.
pub async fn garbage_after_a_handshake(url: &str) -> Option<u16> {
    let mut stream = raw::connect(url).await;
    let mut bytes = vec![0xF3];
    bytes.extend(garbage(2048, 11));
    stream.write_all(&bytes).await.expect("write");
    close_code(&mut stream).await
}

/// A text frame that is not UTF-8. Returns the close code.
pub async fn invalid_utf8_in_a_text_frame(url: &str) -> Option<u16> {
    let mut stream = raw::connect(url).await;
    stream
        .write_all(&raw::frame(1, &[b'{', 0xFF, 0xFE, b'}']))
        .await
        .expect("write");
    close_code(&mut stream).await
}

/// A frame with reserved opcode 3. Returns the close code.
pub async fn a_reserved_opcode(url: &str) -> Option<u16> {
    let mut stream = raw::connect(url).await;
    stream.write_all(&raw::frame(3, b"x")).await.expect("write");
    close_code(&mut stream).await
}

/// A client frame without a mask (RFC 6455 requires one). Returns the close code.
pub async fn an_unmasked_client_frame(url: &str) -> Option<u16> {
    let mut stream = raw::connect(url).await;
    let text = br#"{"type":"INIT"}"#;
    let mut frame = vec![0x81, u8::try_from(text.len()).expect("short")];
    frame.extend_from_slice(text);
    stream.write_all(&frame).await.expect("write");
    close_code(&mut stream).await
}

/// A masked text frame whose 64-bit length says 2^63 bytes (the spec even forbids the top
/// bit), followed by two. Returns the close code.
pub async fn a_frame_announcing_2_pow_63_bytes(url: &str) -> Option<u16> {
    let mut stream = raw::connect(url).await;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(b"{}");
    stream.write_all(&frame).await.expect("write");
    close_code(&mut stream).await
}

/// A message just over 1 MiB, the default limit. Returns the close code.
pub async fn a_message_over_the_limit(url: &str) -> Option<u16> {
    let stream = raw::connect(url).await;
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
    first_close_code(&raw::parse(&bytes))
}

/// One hostile JSON text and the start of the ERR 400 message it must get.
pub struct HostileJson {
    pub what: &'static str,
    pub text: String,
    pub expected: &'static str,
}

/// JSON built to hurt a parser: each must get a precise ERR 400 and leave the connection
/// open. The large ones stay under the default 1 MiB message limit.
pub fn hostile_json() -> Vec<HostileJson> {
    let case = |what, text, expected| HostileJson {
        what,
        text,
        expected,
    };
    vec![
        case(
            "100,000 nested [",
            "[".repeat(100_000),
            "a message must be a JSON object, this is an array",
        ),
        case(
            // Forwarded, it would crash the receiver's decoder (rule 2.7).
            "a msg nested 200,000 levels deep",
            format!(
                r#"{{"type":"ROUTE","EpheWssAddr":"{:032x}","msg":{{"a":{}{}}}}}"#,
                7,
                "[".repeat(200_000),
                "]".repeat(200_000)
            ),
            "/msg: nested more than 100 levels deep",
        ),
        case(
            "900 KiB string",
            format!(r#"{{"type":"INIT","pad":"{}"}}"#, "x".repeat(900 << 10)),
            r#"/pad: unexpected member "pad" (INIT has only "type")"#,
        ),
        case(
            "900 KiB type name",
            format!(r#"{{"type":"{}"}}"#, "t".repeat(900 << 10)),
            r#"/type: "tttt"#,
        ),
        case(
            // Found by the message_parse fuzz target: member names were quoted in full.
            "900 KiB member name",
            format!(r#"{{"type":"INIT","{}":1}}"#, "n".repeat(900 << 10)),
            "/nnnn",
        ),
        case(
            "duplicate keys",
            r#"{"type":"INIT","type":"ROUTE"}"#.into(),
            r#"duplicate member "type""#,
        ),
        case(
            "lone surrogate",
            r#"{"type":"\ud800"}"#.into(),
            "invalid JSON: in member \"type\": ",
        ),
        case(
            "huge number",
            r#"{"type":"INIT","n":1e999999}"#.into(),
            "invalid JSON: in member \"n\": number out of range",
        ),
    ]
}

/// Send every [`hostile_json`] case on `client` and check each reply: ERR 400, the
/// expected start, and short.
pub async fn send_hostile_json(client: &mut Client) {
    for HostileJson {
        what,
        text,
        expected,
    } in hostile_json()
    {
        client.send(&text).await;
        let message = client.expect_err(400).await;
        assert!(message.starts_with(expected), "{what}: {message}");
        assert!(
            message.len() < 1024,
            "{what}: a {}-byte error message",
            message.len()
        );
    }
}
