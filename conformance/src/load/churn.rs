//! Churn clients: connect, INIT, one invalid message, one route to themselves, leave.

use std::sync::atomic::Ordering;
use std::time::Duration;

use compendium_client::ClientBuilder;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{Shared, open};

/// At most one churn cycle per client per this period (10 per second).
const CHURN_PERIOD: Duration = Duration::from_millis(100);

/// How long a churn client waits for each reply before calling it lost.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);

/// Churn until told to stop; returns the cycles completed. Anything unexpected is a
/// problem that makes the run INVALID.
pub(super) async fn churn(shared: &Shared, url: &str, client: &ClientBuilder) -> u64 {
    let mut cycles = 0u64;
    // Paced, so a long run churns steadily instead of exhausting ephemeral ports.
    let mut pace = tokio::time::interval(CHURN_PERIOD);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let (mut socket, address) = match open(url, client, false).await {
            Ok(opened) => opened,
            Err(err) => {
                shared.problem(format!("churn: {err}"));
                return cycles;
            }
        };
        let invalid = r#"{"type":"ROUTE","EpheWssAddr":"not-an-address","msg":{}}"#;
        let msg = format!(r#"{{"churn":{cycles}}}"#);
        let route = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{address}","msg":{msg}}}"#);
        let deliver = format!(r#"{{"type":"DELIVER","msg":{msg}}}"#);
        if socket.send(Frame::text(invalid)).await.is_err()
            || socket.send(Frame::text(route)).await.is_err()
        {
            shared.problem("churn: a connection failed while sending".into());
            return cycles;
        }
        let (mut rejected, mut delivered) = (false, false);
        while !(rejected && delivered) {
            let text = match tokio::time::timeout(REPLY_PATIENCE, socket.next()).await {
                Ok(Some(Ok(Frame::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => {
                    shared.problem("churn: the connection ended before its replies".into());
                    return cycles;
                }
                Err(_) => {
                    shared.problem("churn: a reply never arrived".into());
                    return cycles;
                }
            };
            let text = text.as_str();
            if text == deliver {
                delivered = true;
            } else if text.contains(r#""errCode":400"#) {
                rejected = true;
            } else {
                shared.problem(format!("churn: unexpected {}", crate::peer::clip(text)));
                return cycles;
            }
        }
        if cycles.is_multiple_of(2) {
            socket.get_ref().reset_on_drop();
            drop(socket);
        } else {
            let _ = socket.close(None).await;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(REPLY_PATIENCE, socket.next()).await {}
        }
        cycles += 1;
    }
    cycles
}
