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
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::remote::Verdict;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Label for errors sent, by `errCode`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: u16,
}

/// Label for forwarded ROUTEs, by verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerdictLabel {
    pub(crate) verdict: &'static str,
}

impl VerdictLabel {
    /// The label of `verdict`.
    pub(crate) fn of(verdict: Verdict) -> Self {
        Self {
            verdict: match verdict {
                Verdict::Delivered => "delivered",
                Verdict::NotFound => "not_found",
                Verdict::Full => "full",
                Verdict::Unreachable => "unreachable",
                Verdict::Absent => "absent",
                Verdict::TimedOut => "timed_out",
                Verdict::Refused => "refused",
                Verdict::Away => "away",
                Verdict::Silent => "silent",
                Verdict::Moved => "moved",
                Verdict::Held => "held",
            },
        }
    }
}

/// Labels of the cluster node info metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabels {
    pub(crate) node_name: String,
    pub(crate) node_id: String,
}

/// Label for version 2 session events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventLabel {
    pub(crate) event: &'static str,
}

/// Reads the detached sessions and their bytes (version 2).
pub(crate) type DetachedSessions = Box<dyn Fn() -> (usize, usize) + Send + Sync>;

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
    /// Version 2 connections that hold a session now.
    pub(crate) sessions_attached: Gauge,
    sessions_detached: Gauge,
    sessions_detached_bytes: Gauge,
    detached_sessions: Option<DetachedSessions>,
    /// Version 2 sessions: started, resumed, taken_over, refused, expired, ended,
    /// revoked, dropped (ended at disconnect by the node's bounds).
    pub(crate) sessions: Family<EventLabel, Counter>,
    pub(crate) messages_replayed: Counter,
    /// Cluster mode only (registered then): 1 while the link to NATS is up.
    pub(crate) cluster_link_up: Gauge,
    /// Times the link to NATS was lost (a failover counts once).
    pub(crate) cluster_link_losses: Counter,
    pub(crate) cluster_routes_sent: Counter,
    pub(crate) cluster_routes_received: Counter,
    pub(crate) cluster_verdicts: Family<VerdictLabel, Counter>,
    pub(crate) cluster_verdict_seconds: Histogram,
    pub(crate) cluster_slow_consumer: Counter,
    pub(crate) cluster_evictions: Counter,
    /// 1, labelled with this node's name and id (cluster mode).
    pub(crate) cluster_node: Family<NodeLabels, Gauge>,
    cluster_mode: bool,
    /// `wss://` only (registered then): when the serving certificate expires.
    pub(crate) tls_certificate_expiry: Gauge,
    tls_reloads: Family<ResultLabel, Counter>,
    registry: Registry,
}

/// Label for TLS reloads, by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: &'static str,
}

/// Reads the number of live addresses from the address registry.
pub(crate) type LiveAddresses = Box<dyn Fn() -> usize + Send + Sync>;

impl Metrics {
    pub(crate) fn new(
        live_addresses: LiveAddresses,
        cluster_mode: bool,
        tls: bool,
        detached_sessions: Option<DetachedSessions>,
    ) -> Self {
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
            sessions_attached: Gauge::default(),
            sessions_detached: Gauge::default(),
            sessions_detached_bytes: Gauge::default(),
            detached_sessions,
            sessions: Family::default(),
            messages_replayed: Counter::default(),
            cluster_link_up: Gauge::default(),
            cluster_link_losses: Counter::default(),
            cluster_routes_sent: Counter::default(),
            cluster_routes_received: Counter::default(),
            cluster_verdicts: Family::default(),
            // 50 µs to about 3.3 s: loopback verdicts to a timeout's worth.
            cluster_verdict_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 17)),
            cluster_slow_consumer: Counter::default(),
            cluster_evictions: Counter::default(),
            cluster_node: Family::default(),
            cluster_mode,
            tls_certificate_expiry: Gauge::default(),
            tls_reloads: Family::default(),
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
        if m.detached_sessions.is_some() {
            r.register(
                "sessions_attached",
                "Version 2 sessions whose connection is open",
                m.sessions_attached.clone(),
            );
            r.register(
                "sessions_detached",
                "Version 2 sessions kept for their grace period after their connection was lost",
                m.sessions_detached.clone(),
            );
            r.register(
                "sessions_detached_bytes",
                "Bytes (unacknowledged and held messages) kept by detached sessions",
                m.sessions_detached_bytes.clone(),
            );
            r.register(
                "session_events",
                "Version 2 session events: started, resumed, taken_over, refused, expired, \
                 ended, revoked, dropped",
                m.sessions.clone(),
            );
            r.register(
                "messages_replayed",
                "Messages sent again to a resumed session (unacknowledged or held)",
                m.messages_replayed.clone(),
            );
        }
        if tls {
            r.register(
                "tls_certificate_expiry_timestamp_seconds",
                "When the certificate served to new wss:// connections expires (Unix time): \
                 alert well before it",
                m.tls_certificate_expiry.clone(),
            );
            r.register(
                "tls_reloads",
                "Reloads of the TLS certificate and key (SIGHUP), by result",
                m.tls_reloads.clone(),
            );
        }
        if cluster_mode {
            r.register(
                "cluster_link_up",
                "1 while this node's link to NATS is up",
                m.cluster_link_up.clone(),
            );
            r.register(
                "cluster_link_losses",
                "Times this node lost its link to NATS (each failover counts once)",
                m.cluster_link_losses.clone(),
            );
            r.register(
                "cluster_routes_sent",
                "ROUTEs forwarded to the node holding their target",
                m.cluster_routes_sent.clone(),
            );
            r.register(
                "cluster_routes_received",
                "ROUTEs received from other nodes",
                m.cluster_routes_received.clone(),
            );
            r.register(
                "cluster_verdicts",
                "Verdicts of forwarded ROUTEs, by verdict",
                m.cluster_verdicts.clone(),
            );
            r.register(
                "cluster_verdict_seconds",
                "Time from forwarding a ROUTE to its verdict",
                m.cluster_verdict_seconds.clone(),
            );
            r.register(
                "cluster_slow_consumer_events",
                "Times NATS messages were dropped for a slow subscription of this node",
                m.cluster_slow_consumer.clone(),
            );
            r.register(
                "cluster_node",
                "This node's name and id in the cluster (always 1)",
                m.cluster_node.clone(),
            );
            r.register(
                "cluster_evictions",
                "Connections closed (1001) because this node was cut off from NATS too long",
                m.cluster_evictions.clone(),
            );
        }
        m
    }

    /// The reload counter for a success (`ok`) or a failure (`failed`).
    pub(crate) fn tls_reloads(&self, ok: bool) -> Counter {
        self.tls_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" },
            })
            .clone()
    }

    /// Why the node is unhealthy, if it is: in cluster mode, a link to NATS that is down
    /// (a load balancer should send clients elsewhere).
    pub(crate) fn unhealthy(&self) -> Option<&'static str> {
        (self.cluster_mode && self.cluster_link_up.get() != 1)
            .then_some("cut off from the cluster: the link to NATS is down")
    }

    /// Count a version 2 session event.
    pub(crate) fn session(&self, event: &'static str) {
        self.sessions.get_or_create(&EventLabel { event }).inc();
    }

    /// The Prometheus/OpenMetrics text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let live = i64::try_from((self.live_addresses)()).unwrap_or(i64::MAX);
        self.addresses_live.set(live);
        if let Some(detached) = &self.detached_sessions {
            let (count, bytes) = detached();
            self.sessions_detached
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            self.sessions_detached_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
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
        ("GET", "/healthz") => match metrics.unhealthy() {
            None => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok\n".to_owned(),
            ),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("unavailable: {why}\n"),
            ),
        },
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
