//! Opening a connection: URL → TCP → TLS (for `wss://`) → WebSocket handshake, each step
//! under its timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::{ConnectError, ConnectStage, Error, Result};
use crate::tls_problem::TlsProblem;

/// The byte stream under a [`RawSocket`]: plain TCP or TLS over TCP.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// Make closing this stream reset the TCP connection (RST) instead of closing it
    /// cleanly (FIN), as when the process is killed: for tests of abrupt disconnects.
    fn reset_on_drop(&self);
}

impl RawIo for TcpStream {
    fn reset_on_drop(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl RawIo for tokio_rustls::client::TlsStream<TcpStream> {
    fn reset_on_drop(&self) {
        self.get_ref().0.reset_on_drop();
    }
}

/// A WebSocket with no protocol handling on top; see
/// [`ClientBuilder::connect_raw`](crate::ClientBuilder::connect_raw).
pub type RawSocket = WebSocketStream<Box<dyn RawIo>>;

pub(crate) type Socket = RawSocket;

/// Where TLS trust comes from.
#[derive(Debug, Clone, Default)]
pub(crate) enum Trust {
    /// Mozilla's roots (webpki-roots).
    #[default]
    WebPki,
    /// Only the certificates in this PEM file (a private CA, or a self-signed server).
    CaFile(PathBuf),
}

pub(crate) struct Dial<'a> {
    pub(crate) url: &'a str,
    pub(crate) trust: &'a Trust,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    /// Offer this WebSocket subprotocol, and require the relay to select it.
    pub(crate) subprotocol: Option<&'static str>,
}

pub(crate) async fn dial(dial: Dial<'_>) -> Result<Socket> {
    let uri: Uri = dial
        .url
        .parse()
        .map_err(|e| Error::InvalidUrl(format!("{:?}: {e}", dial.url)))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(Error::InvalidUrl(format!(
                "{:?}: the scheme must be ws:// or wss://",
                dial.url
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| Error::InvalidUrl(format!("{:?}: no host", dial.url)))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut request = dial
        .url
        .into_client_request()
        .map_err(|e| Error::InvalidUrl(format!("{:?}: {e}", dial.url)))?;
    if let Some(subprotocol) = dial.subprotocol {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL,
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(subprotocol),
        );
    }
    let connector = if tls {
        Some(tls_connector(dial.trust)?)
    } else {
        None
    };

    let tcp = tokio::time::timeout(
        dial.connect_timeout,
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| Error::Timeout {
        what: "connect",
        after: dial.connect_timeout,
    })?
    .map_err(|e| {
        Error::Connect(ConnectError::io(
            ConnectStage::Tcp,
            format!("{host}:{port}: {e}"),
            e,
        ))
    })?;
    // Protocol messages are small and latency matters more than batching.
    let _ = tcp.set_nodelay(true);

    // What a plain server sent first, to recognise a TLS server behind a ws:// URL.
    let first_byte = Arc::new(std::sync::OnceLock::new());
    let handshake = async {
        let stream: Box<dyn RawIo> = match connector {
            None => Box::new(FirstByte {
                inner: tcp,
                first: Arc::clone(&first_byte),
                seen: false,
            }),
            Some(connector) => {
                let name = ServerName::try_from(host.clone()).map_err(|e| {
                    Error::InvalidUrl(format!("{host:?} is not a TLS server name: {e}"))
                })?;
                let stream = connector.connect(name, tcp).await.map_err(|e| {
                    Error::Connect(match TlsProblem::of_handshake(&e, &host) {
                        Some(problem) => ConnectError::tls(
                            ConnectStage::Tls,
                            format!(
                                "TLS handshake with {host}: {}",
                                problem.advice(dial.url, dial.trust)
                            ),
                            problem,
                            Some(e),
                        ),
                        None => ConnectError::io(
                            ConnectStage::Tls,
                            format!("TLS handshake with {host}: {e}"),
                            e,
                        ),
                    })
                })?;
                Box::new(stream)
            }
        };
        // tungstenite's default 128 KiB read buffer is allocated up front; a client (or a
        // load generator holding thousands of connections) does not need it.
        let config = WebSocketConfig::default().read_buffer_size(4 << 10);
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| {
                    // A TLS record (handshake 0x16 or alert 0x15) in answer to an HTTP request.
                    if matches!(first_byte.get(), Some(0x15 | 0x16)) {
                        let problem = TlsProblem::TlsServer;
                        return Error::Connect(ConnectError::tls(
                            ConnectStage::WebSocket,
                            format!(
                                "WebSocket handshake with {}: {}",
                                dial.url,
                                problem.advice(dial.url, dial.trust)
                            ),
                            problem,
                            None,
                        ));
                    }
                    if let WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                    _,
                ),
            ) = &e
            {
                return Error::Connect(ConnectError::no_subprotocol(format!(
                    "WebSocket handshake with {}: the relay does not speak protocol \
                                 version 2 ({}), so it cannot resume sessions; connect without \
                                 resumable mode, or run a relay that has it (compendium-server \
                                 with --resume-grace above 0)",
                    dial.url,
                    dial.subprotocol.unwrap_or_default()
                )));
            }
                    let message = format!("WebSocket handshake with {}: {e}", dial.url);
                    Error::Connect(match e {
                        WsError::Http(response) => {
                            ConnectError::http(response.status().as_u16(), message)
                        }
                        WsError::Io(io) => ConnectError::io(ConnectStage::WebSocket, message, io),
                        _ => ConnectError::other(ConnectStage::WebSocket, message),
                    })
                })?;
        Ok(socket)
    };
    tokio::time::timeout(dial.handshake_timeout, handshake)
        .await
        .map_err(|_| Error::Timeout {
            what: "handshake",
            after: dial.handshake_timeout,
        })?
}

fn tls_connector(trust: &Trust) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Trust::CaFile(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect)
                .map_err(|e| Error::Tls(format!("reading {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::Tls(format!(
                    "no PEM certificate in {}",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    Error::Tls(format!("{}: unusable certificate: {e}", path.display()))
                })?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A plain TCP stream that remembers the first byte the server sent (then reads through).
struct FirstByte {
    inner: TcpStream,
    first: Arc<std::sync::OnceLock<u8>>,
    seen: bool,
}

impl AsyncRead for FirstByte {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.seen
            && let Some(&byte) = buf.filled().get(before)
        {
            let _ = self.first.set(byte);
            self.seen = true;
        }
        polled
    }
}

impl AsyncWrite for FirstByte {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl RawIo for FirstByte {
    fn reset_on_drop(&self) {
        self.inner.reset_on_drop();
    }
}
