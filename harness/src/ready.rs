//! [`Ready`]: the relay's readiness event, read from its JSON log.

use serde_json::Value;

/// What `compendium-server` announces once every listener is bound: one log event with
/// `event = "ready"`, `listen` (its WebSocket URLs, comma-separated) and `metrics` (the
/// `/metrics` address, empty when off). With `--log-format json` it is the line
/// `{"level":"INFO","fields":{"event":"ready","listen":"ws://127.0.0.1:40001","metrics":"127.0.0.1:40002",...},...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The WebSocket URLs it serves, in the order of its `--listen` flags.
    pub urls: Vec<String>,
    /// The `/healthz` + `/metrics` address (`IP:PORT`), if it serves them.
    pub metrics: Option<String>,
    /// In cluster mode, the node's name and id (`name (id)`).
    pub node: Option<String>,
}

impl Ready {
    /// The event, if `line` is one (a JSON log line whose `fields.event` is `ready`).
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let event: Value = serde_json::from_str(line).ok()?;
        let fields = event.get("fields")?;
        if fields.get("event")?.as_str()? != "ready" {
            return None;
        }
        let urls = fields
            .get("listen")?
            .as_str()?
            .split(',')
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
        };
        Some(Self {
            urls,
            metrics: text("metrics"),
            node: text("node"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_event_and_nothing_else() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"listening on ws://127.0.0.1:1","event":"ready","listen":"ws://127.0.0.1:1,ws://[::1]:2","metrics":"127.0.0.1:3"},"target":"compendium_server::server"}"#;
        assert_eq!(
            Ready::parse(line),
            Some(Ready {
                urls: vec!["ws://127.0.0.1:1".into(), "ws://[::1]:2".into()],
                metrics: Some("127.0.0.1:3".into()),
                node: None,
            })
        );
        let no_metrics = line.replace("127.0.0.1:3", "");
        assert_eq!(Ready::parse(&no_metrics).and_then(|r| r.metrics), None);
        assert_eq!(Ready::parse("listening on ws://127.0.0.1:1"), None);
        assert_eq!(Ready::parse(r#"{"fields":{"event":"stopped"}}"#), None);
    }
}
