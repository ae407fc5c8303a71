//! One actor's connection, at frame level: what is sent and received exactly.

use std::time::Duration;

use compendium_client::{ClientBuilder, RawSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A frame (or the end of the connection) as an actor received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A pong, with its payload.
    Pong(Vec<u8>),
    /// A close frame: code and reason, if it had them.
    Close(Option<(u16, String)>),
    /// The connection ended without (further) frames: how.
    Ended(String),
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => write!(f, "text {}", clip(text)),
            Self::Binary(bytes) => write!(f, "a binary frame of {} bytes", bytes.len()),
            Self::Pong(bytes) => write!(f, "pong {:?}", String::from_utf8_lossy(bytes)),
            Self::Close(Some((code, reason))) => write!(f, "close {code} {reason:?}"),
            Self::Close(None) => write!(f, "close (no code)"),
            Self::Ended(how) => write!(f, "end of connection ({how})"),
        }
    }
}

/// Long frames are shown cut, so a report stays readable.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// A raw connection to the relay under test.
pub struct Peer {
    ws: RawSocket,
}

impl Peer {
    /// Open a WebSocket to `url` (TLS trust and timeouts from `options`).
    ///
    /// # Errors
    /// Why it could not connect.
    pub async fn connect(url: &str, options: &ClientBuilder) -> Result<Self, String> {
        let ws = options.connect_raw(url).await.map_err(|e| e.to_string())?;
        Ok(Self { ws })
    }

    /// Send one text frame.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.ws
            .send(Frame::text(text))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Send one binary frame.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Frame::binary(bytes))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Send any frame, e.g. a fragment built by hand.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), String> {
        self.ws
            .send(frame)
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Send a ping.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn ping(&mut self, payload: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Frame::Ping(payload.into()))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// The next frame other than a ping (answered automatically), waiting at most `within`.
    ///
    /// # Errors
    /// A timeout, as text.
    pub async fn next(&mut self, within: Duration) -> Result<Received, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("nothing arrived within {} ms", within.as_millis()))?;
            return Ok(match next {
                None => Received::Ended("connection closed".into()),
                Some(Err(err)) => Received::Ended(err.to_string()),
                Some(Ok(Frame::Text(text))) => Received::Text(text.as_str().to_owned()),
                Some(Ok(Frame::Binary(bytes))) => Received::Binary(bytes.to_vec()),
                Some(Ok(Frame::Pong(bytes))) => Received::Pong(bytes.to_vec()),
                Some(Ok(Frame::Close(frame))) => Received::Close(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                ),
                Some(Ok(Frame::Ping(_) | Frame::Frame(_))) => continue,
            });
        }
    }

    /// The close handshake from our side: send close 1000, then read until the relay's
    /// close frame and the end of the connection.
    ///
    /// # Errors
    /// What was wrong with the relay's closing behaviour.
    pub async fn close(mut self, within: Duration) -> Result<(), String> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if let Err(err) = self.ws.send(Frame::Close(Some(frame))).await {
            return Err(format!("could not send a close frame: {err}"));
        }
        let mut answered = false;
        loop {
            match self.next(within).await? {
                Received::Close(_) => answered = true,
                Received::Ended(_) if answered => return Ok(()),
                Received::Ended(how) => {
                    return Err(format!(
                        "connection ended without answering our close frame ({how})"
                    ));
                }
                // Frames already in flight before our close are fine.
                _ => {}
            }
        }
    }

    /// Wait until the relay ends the connection; returns its close frame, if any.
    ///
    /// # Errors
    /// If it does not end within `within`.
    pub async fn wait_for_end(
        &mut self,
        within: Duration,
    ) -> Result<Option<(u16, String)>, String> {
        let mut close = None;
        loop {
            match self.next(within).await? {
                Received::Close(frame) => close = frame,
                Received::Ended(_) => return Ok(close),
                _ => {}
            }
        }
    }

    /// End the connection abruptly: a TCP reset, no close frame (as when the peer process
    /// is killed).
    pub fn drop_abruptly(self) {
        self.ws.get_ref().reset_on_drop();
        drop(self);
    }
}
