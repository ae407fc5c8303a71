//! A raw WebSocket peer over plain TCP, for tests that must see exactly what the server
//! writes or send what no well-behaved client would.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// Connect and complete the opening handshake by hand; returns the stream positioned at
/// the first frame.
pub async fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = handshake_request(addr);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .expect("handshake in time")
            .expect("read");
        head.push(byte);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A complete, valid opening handshake request for `addr` (host:port).
pub fn handshake_request(addr: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client frame: FIN set, the given opcode, masked with a zero key (valid, and keeps
/// the payload readable).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | u8::try_from(len).expect("small"));
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A frame the server sent: opcode and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// For a close frame: the status code and the reason.
    pub fn close(&self) -> Option<(u16, String)> {
        (self.opcode == 8 && self.payload.len() >= 2).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                String::from_utf8_lossy(&self.payload[2..]).into_owned(),
            )
        })
    }
}

/// Read every frame until the server closes the TCP connection.
pub async fn read_until_eof(stream: &mut TcpStream) -> Vec<ServerFrame> {
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("server closes in time")
        .expect("read");
    parse(&bytes)
}

/// The frames in bytes a server wrote (unmasked).
pub fn parse(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(
                    bytes[2..10].try_into().expect("8 bytes"),
                ))
                .expect("fits"),
                10,
            ),
            n => (usize::from(n), 2),
        };
        frames.push(ServerFrame {
            opcode,
            payload: bytes[header..header + len].to_vec(),
        });
        bytes = &bytes[header + len..];
    }
    frames
}
