//! Accepting TCP connections and upgrading them: TLS (optional), the WebSocket
//! handshake with the connection limit, and the handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use compendium_messages::SUBPROTOCOL_V2;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::burst::BurstReader;
use crate::connection;
use crate::shared::Shared;

/// After an accept error (typically EMFILE: out of file descriptors) wait this long before
/// trying again, instead of spinning; the loop itself never gives up.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Accept connections on `listener` until shutdown, each in its own tracked task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small frames are the norm; don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let span = tracing::info_span!("conn", %peer);
                tasks
                    .spawn(handle(stream, peer, tls.clone(), Arc::clone(&shared)).instrument(span));
            }
            Err(err) => {
                shared.metrics.accept_errors.inc();
                tracing::warn!(error = %err, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    // A future is as large as its largest state, for as long as it lives. So each stage
    // that a live connection no longer needs (TLS and WebSocket handshakes) runs in its own
    // boxed future, freed when done, and no value from one stage (a match scrutinee, a
    // moved-from local) is kept across the next stage's `.await`.
    let stream = BurstReader::new(stream);
    match tls {
        None => upgrade(stream, peer, deadline, shared).await,
        Some(acceptor) => Box::pin(upgrade_tls(stream, acceptor, peer, deadline, shared)).await,
    }
}

async fn upgrade_tls(
    stream: BurstReader<TcpStream>,
    acceptor: TlsAcceptor,
    peer: SocketAddr,
    deadline: Instant,
    shared: Arc<Shared>,
) {
    let stream = match timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return tracing::debug!(error = %err, "TLS handshake failed"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    upgrade(stream, peer, deadline, shared).await;
}

async fn upgrade<S>(stream: S, peer: SocketAddr, deadline: Instant, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (relay, permit) = match Box::pin(handshake(stream, deadline, &shared)).await {
        Some((ws, permit, v2)) => (
            Box::pin(connection::run(ws, Arc::clone(&shared), peer.ip(), v2)),
            permit,
        ),
        None => return,
    };
    tracing::debug!(%peer, "connected");
    let exit = relay.await;
    drop(permit);
    shared.ended.send_modify(|n| *n += 1);
    tracing::info!(reason = exit.as_str(), "disconnected");
}

/// An HTTP 503 refusal of a handshake, saying why.
fn refusal(why: &str) -> ErrorResponse {
    let mut refusal = ErrorResponse::new(Some(why.to_owned()));
    *refusal.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    refusal
}

/// The WebSocket handshake, with the connection limit checked inside it so that a refused
/// client gets a real HTTP 503 (rule 4.3); the permit lives as long as the connection.
/// Also selects version 2 when the client offers it and sessions are on (section 6).
async fn handshake<S>(
    stream: S,
    deadline: Instant,
    shared: &Shared,
) -> Option<(
    tokio_tungstenite::WebSocketStream<S>,
    tokio::sync::OwnedSemaphorePermit,
    bool,
)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut permit = None;
    let mut v2 = false;
    // The callback's signature is tungstenite's; the large error type is theirs.
    #[allow(clippy::result_large_err)]
    let check_limit =
        |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            if shared.refusing.load(std::sync::atomic::Ordering::Acquire) {
                shared.metrics.handshakes_refused.inc();
                return Err(refusal(
                    "this relay node is cut off from its cluster; connect to another node\n",
                ));
            }
            match Arc::clone(&shared.slots).try_acquire_owned() {
                Ok(slot) => {
                    permit = Some(slot);
                    if shared.relay.sessions().is_some() && offers_v2(request) {
                        v2 = true;
                        response.headers_mut().insert(
                            SEC_WEBSOCKET_PROTOCOL,
                            HeaderValue::from_static(SUBPROTOCOL_V2),
                        );
                    }
                    Ok(response)
                }
                Err(_) => {
                    shared.metrics.handshakes_refused.inc();
                    Err(refusal(
                        "the relay is at its connection limit; try again later\n",
                    ))
                }
            }
        };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check_limit,
        Some(shared.ws_config),
    );
    let ws = match timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "WebSocket handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("WebSocket handshake timed out");
            return None;
        }
    };
    Some((ws, permit?, v2))
}

/// Whether the client's `Sec-WebSocket-Protocol` lists version 2 (RFC 6455 section 4.1:
/// comma-separated, in one header or several).
fn offers_v2(request: &Request) -> bool {
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offered| offered.trim() == SUBPROTOCOL_V2)
}
