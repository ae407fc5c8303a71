//! Counters and gauges in the Prometheus text format, and the `/healthz` + `/metrics`
//! HTTP endpoint that serves them.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Label for errors sent, by `errCode`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: u16,
}

/// Label for connections closed, by why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Everything the relay counts. Cheap atomics: safe on the hot path.
pub(crate) struct Metrics {
    pub(crate) connections_open: Gauge,
    /// Set from `live_addresses` at each scrape, so it can never drift from the registry.
    addresses_live: Gauge,
    live_addresses: LiveAddresses,
    pub(crate) messages_in: Counter,
    pub(crate) messages_routed: Counter,
    pub(crate) errors: Family<CodeLabel, Counter>,
    pub(crate) queue_full: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) connections_closed: Family<ReasonLabel, Counter>,
    pub(crate) handshakes_refused: Counter,
    pub(crate) accept_errors: Counter,
    registry: Registry,
}

/// Reads the number of live addresses from the address registry.
pub(crate) type LiveAddresses = Box<dyn Fn() -> usize + Send + Sync>;

impl Metrics {
    pub(crate) fn new(live_addresses: LiveAddresses) -> Self {
        let mut m = Self {
            connections_open: Gauge::default(),
            addresses_live: Gauge::default(),
            live_addresses,
            messages_in: Counter::default(),
            messages_routed: Counter::default(),
            errors: Family::default(),
            queue_full: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections_closed: Family::default(),
            handshakes_refused: Counter::default(),
            accept_errors: Counter::default(),
            registry: Registry::with_prefix("compendium"),
        };
        let r = &mut m.registry;
        r.register(
            "connections_open",
            "Open WebSocket connections",
            m.connections_open.clone(),
        );
        r.register(
            "addresses_live",
            "Live ephemeral addresses",
            m.addresses_live.clone(),
        );
        r.register(
            "messages_received",
            "Data frames received from clients",
            m.messages_in.clone(),
        );
        r.register(
            "messages_routed",
            "ROUTEs queued for their target as DELIVER",
            m.messages_routed.clone(),
        );
        r.register(
            "errors_sent",
            "ERR messages sent, by errCode",
            m.errors.clone(),
        );
        r.register(
            "queue_full_refusals",
            "ROUTEs refused because the target's queue was full",
            m.queue_full.clone(),
        );
        r.register(
            "received_bytes",
            "Payload bytes of data frames received",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Payload bytes of data frames sent",
            m.bytes_out.clone(),
        );
        r.register(
            "connections_closed",
            "Connections ended, by reason",
            m.connections_closed.clone(),
        );
        r.register(
            "handshakes_refused",
            "WebSocket handshakes refused at the connection limit",
            m.handshakes_refused.clone(),
        );
        r.register(
            "accept_errors",
            "Errors accepting TCP connections (e.g. out of file descriptors)",
            m.accept_errors.clone(),
        );
        m
    }

    /// The Prometheus/OpenMetrics text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let live = i64::try_from((self.live_addresses)()).unwrap_or(i64::MAX);
        self.addresses_live.set(live);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serve `/healthz` and `/metrics` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&metrics)));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, error = %err, "metrics endpoint: connection error");
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        ("GET", "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try GET /healthz or GET /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}
