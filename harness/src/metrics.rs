//! Reading a relay's `/metrics` from outside.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};

/// The response to `GET /metrics` from the HTTP endpoint at `addr` (`IP:PORT`), headers
/// included (samples are found by name, so they do no harm).
///
/// # Errors
/// If the endpoint cannot be reached or does not answer within 10 s.
pub fn get_metrics(addr: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connecting to the metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: the server closes the connection after the response, which ends the read.
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading {addr}/metrics"))?;
    Ok(response)
}

/// The value of the sample named exactly `name` (labels included, e.g.
/// `compendium_errors_sent_total{code="400"}`) in a Prometheus text exposition.
#[must_use]
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_exact_name() {
        let text = "# TYPE x counter\nx_total 3\nx_total{code=\"400\"} 2\nx_totals 9\n";
        assert_eq!(sample(text, "x_total"), Some(3.0));
        assert_eq!(sample(text, r#"x_total{code="400"}"#), Some(2.0));
        assert_eq!(sample(text, "y"), None);
    }
}
