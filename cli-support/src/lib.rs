//! What the three binaries (`compendium-server`, `compendium-client`,
//! `compendium-conformance`) share, so that they behave alike: how they wait for SIGINT and
//! SIGTERM, how they read a number of seconds, and what their exit statuses mean.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// The exit statuses the binaries use; each binary's `--help` says which apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// It worked.
    Success = 0,
    /// It failed: refused by the relay, a failed run, a connection that failed.
    Failure = 1,
    /// The command line or an input file was unusable.
    Usage = 2,
    /// A `--timeout` expired.
    Timeout = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP, registered up front so that a binary that cannot
/// receive them says so at startup instead of ignoring Ctrl-C later.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP: the server reloads its certificate; other binaries stop, as they would
    /// without a handler.
    Hangup,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        })
    }
}

impl Signals {
    /// Start listening for SIGINT, SIGTERM and SIGHUP; needs a tokio runtime.
    ///
    /// # Errors
    /// If the operating system refuses a signal handler: say so and stop, rather than
    /// run with a Ctrl-C that does nothing.
    pub fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next SIGINT, SIGTERM or SIGHUP.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
                _ = self.hangup.recv() => Signal::Hangup,
            }
        }
        #[cfg(not(unix))]
        {
            // Ctrl-C is the one signal other platforms deliver; an error there leaves
            // nothing to wait for.
            match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// `at` in whole seconds since the Unix epoch (negative before it; saturating).
#[must_use]
pub fn unix_seconds(at: std::time::SystemTime) -> i64 {
    match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `at` as RFC 3339 in UTC, to the second (`2026-12-01T12:00:00Z`): how messages about
/// certificates give dates.
#[must_use]
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let seconds = unix_seconds(at);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{seconds} s after the Unix epoch"))
}

/// A duration given in seconds on the command line (`30`, `0.5`), shown the same way, so
/// that clap can print a default that came from a `Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let secs: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        Duration::try_from_secs_f64(secs)
            .map(Self)
            .map_err(|_| format!("{text:?} is not a usable number of seconds"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl From<Seconds> for Duration {
    fn from(seconds: Seconds) -> Self {
        seconds.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_in_utc() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_796_126_400);
        assert_eq!(rfc3339(at), "2026-12-01T12:00:00Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn seconds_read_and_show_the_same_way() {
        let read = |t: &str| t.parse::<Seconds>().map(Duration::from);
        assert_eq!(read("30"), Ok(Duration::from_secs(30)));
        assert_eq!(read("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(
            read("soon"),
            Err("\"soon\" is not a number of seconds".into())
        );
        assert_eq!(
            read("-1"),
            Err("\"-1\" is not a usable number of seconds".into())
        );
        assert_eq!(Seconds(Duration::from_secs(90)).to_string(), "90");
        assert_eq!(Seconds(Duration::from_millis(1500)).to_string(), "1.5");
    }

    #[tokio::test]
    async fn signals_register_and_a_sigterm_arrives() {
        let mut signals = Signals::register().expect("register");
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        assert_eq!(signals.recv().await, Signal::Terminate);
    }
}
