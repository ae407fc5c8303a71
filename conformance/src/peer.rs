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
            Self::Close(Some((code, reason))) => {
                write!(f, "the relay's close frame {code} {reason:?}")
            }
            Self::Close(None) => write!(f, "the relay's close frame (no code)"),
            Self::Ended(how) => write!(f, "the end of the connection ({how})"),
        }
    }
}

/// Long frames are shown cut, so a report stays readable; control characters are shown
/// escaped (`\u{1}`), so a relay's garbage cannot garble the terminal.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 300;
    let mut end = MAX.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let shown: String = text[..end]
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if end == text.len() {
        shown
    } else {
        format!("{shown}… ({} bytes)", text.len())
    }
}

/// A raw connection to the relay under test.
pub struct Peer {
    ws: RawSocket,
    /// How the connection ended, once it has: the relay's close frame if it sent one, or
    /// what broke it. Every later read fails at once with this, so a loop that waits for a
    /// frame can never spin on a dead connection.
    ended: Option<String>,
    /// The relay's close frame, kept until the end of the connection is seen.
    close: Option<String>,
    /// The relay selected protocol version 2 (`compendium.v2`).
    v2: bool,
}

impl Peer {
    /// Open a WebSocket to `url` (TLS trust and timeouts from `options`).
    ///
    /// # Errors
    /// Why it could not connect.
    pub async fn connect(url: &str, options: &ClientBuilder) -> Result<Self, String> {
        let ws = options.connect_raw(url).await.map_err(|e| e.to_string())?;
        Ok(Self {
            ws,
            ended: None,
            close: None,
            v2: false,
        })
    }

    /// Open a WebSocket offering protocol version 2 (`compendium.v2`). `Ok(None)`: the
    /// relay selected no subprotocol, so it does not speak version 2.
    ///
    /// # Errors
    /// Why it could not connect.
    pub async fn connect_v2(url: &str, options: &ClientBuilder) -> Result<Option<Self>, String> {
        match options.connect_raw_v2(url).await {
            Ok(ws) => Ok(Some(Self {
                ws,
                ended: None,
                close: None,
                v2: true,
            })),
            Err(compendium_client::Error::Connect(err)) if err.is_version_refused() => Ok(None),
            Err(err) => Err(err.to_string()),
        }
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

    /// Write out whatever earlier sends left buffered (a send cancelled by a timeout leaves
    /// its frame in the socket's buffer).
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn flush(&mut self) -> Result<(), String> {
        self.ws
            .flush()
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
    /// The end of the connection is returned once, as [`Received::Ended`].
    ///
    /// # Errors
    /// A timeout, or a read after the connection has ended, as text that says how it ended
    /// (e.g. "the relay closed the connection with 1011 \"internal error\"").
    pub async fn next(&mut self, within: Duration) -> Result<Received, String> {
        if let Some(how) = &self.ended {
            return Err(how.clone());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("nothing arrived within {} ms", within.as_millis()))?;
            return Ok(match next {
                None => self.end("connection closed".into()),
                Some(Err(err)) => self.end(err.to_string()),
                Some(Ok(Frame::Text(text))) => Received::Text(text.as_str().to_owned()),
                Some(Ok(Frame::Binary(bytes))) => Received::Binary(bytes.to_vec()),
                Some(Ok(Frame::Pong(bytes))) => Received::Pong(bytes.to_vec()),
                Some(Ok(Frame::Close(frame))) => {
                    let frame = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                    self.close = Some(match &frame {
                        Some((code, reason)) => {
                            format!("the relay closed the connection with {code} {reason:?}")
                        }
                        None => "the relay closed the connection (no close code)".to_owned(),
                    });
                    Received::Close(frame)
                }
                Some(Ok(Frame::Ping(_) | Frame::Frame(_))) => continue,
            });
        }
    }

    /// Record the end of the connection; `how` it broke unless the relay closed it.
    fn end(&mut self, how: String) -> Received {
        let ended = self
            .close
            .clone()
            .unwrap_or_else(|| format!("the connection ended without a close frame ({how})"));
        self.ended = Some(ended);
        Received::Ended(how)
    }

    /// Whether the relay selected protocol version 2 on this connection.
    #[must_use]
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// How the connection ended (or is ending: the relay's close frame has arrived), if it
    /// has, e.g. "the relay closed the connection with 1011 \"internal error\"".
    #[must_use]
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref().or(self.close.as_deref())
    }

    /// The close handshake from our side: send close 1000, then read until the relay's
    /// close frame and the end of the connection.
    ///
    /// # Errors
    /// What was wrong with the relay's closing behaviour.
    pub async fn close(mut self, within: Duration) -> Result<(), String> {
        // Unless the relay began closing first, begin the close handshake ourselves.
        if self.close.is_none() && self.ended.is_none() {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            if let Err(err) = self.ws.send(Frame::Close(Some(frame))).await {
                return Err(format!("could not send a close frame: {err}"));
            }
        }
        let mut answered = self.close.is_some();
        while self.ended.is_none() {
            match self.next(within).await? {
                Received::Close(_) => answered = true,
                Received::Ended(how) if !answered => {
                    return Err(format!(
                        "connection ended without answering our close frame ({how})"
                    ));
                }
                // Frames already in flight before our close are fine.
                _ => {}
            }
        }
        match (answered, &self.ended) {
            (false, Some(how)) => Err(format!("before our close frame, {how}")),
            _ => Ok(()),
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
