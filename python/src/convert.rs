//! Rust values into Python ones: events into tuples, errors into the package's exception
//! classes (defined in Python, `compendium_wss._errors`, so that they are ordinary Python
//! classes users can subclass, pickle and read the source of).

use compendium_client::{ConnectStage, Error, Event, TlsProblem};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use crate::inbox::Value;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// An event as a tuple whose first item names it:
/// `("deliver", json_text)`, `("error", exception)`, `("resumed", address, resent)`,
/// `("session_lost", reason)`, `("closed", code_or_None, reason)`.
pub(crate) fn event(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyTuple>> {
    match event {
        Event::Deliver(payload) => ("deliver", payload.as_str()).into_pyobject(py),
        Event::Error(err) => ("error", exception(py, &err)?).into_pyobject(py),
        Event::Resumed { address, resent } => {
            ("resumed", address.to_string(), resent).into_pyobject(py)
        }
        Event::SessionLost { reason } => ("session_lost", reason).into_pyobject(py),
        Event::Closed { code, reason } => ("closed", code, reason).into_pyobject(py),
        // A kind of event this binding does not know yet (the enum is non-exhaustive):
        // say so rather than drop it.
        other => ("unknown", format!("{other:?}")).into_pyobject(py),
    }
}

/// A finished operation as `("ok", value)` or `("err", exception)`.
pub(crate) fn done(py: Python<'_>, done: Result<Value, Error>) -> PyResult<Bound<'_, PyTuple>> {
    match done {
        Ok(Value::Unit) => ("ok", py.None()).into_pyobject(py),
        Ok(Value::Address(address)) => ("ok", address.to_string()).into_pyobject(py),
        Err(err) => ("err", exception(py, &err)?).into_pyobject(py),
    }
}

/// The Python exception for `err`, with the same message the Rust client gives.
pub(crate) fn exception<'py>(py: Python<'py>, err: &Error) -> PyResult<Bound<'py, PyAny>> {
    let details = PyDict::new(py);
    let kind = match err {
        Error::InvalidUrl(_) => "invalid_url",
        Error::Tls(_) => "tls_config",
        Error::Connect(connect) => {
            details.set_item("stage", stage_name(connect.stage()))?;
            details.set_item("http_status", connect.http_status())?;
            details.set_item("version_refused", connect.is_version_refused())?;
            details.set_item("tls_problem", connect.tls_problem().map(problem_name))?;
            if connect.tls_problem().is_some() || connect.stage() == ConnectStage::Tls {
                "tls"
            } else {
                "connect"
            }
        }
        Error::Timeout { what, after } => {
            details.set_item("what", *what)?;
            details.set_item("after", after.as_secs_f64())?;
            "timeout"
        }
        Error::Server { code, message } => {
            details.set_item("code", *code)?;
            details.set_item("text", message)?;
            "relay"
        }
        Error::InvalidFrame(_) => "protocol",
        Error::InvalidPayload(_) => "invalid_message",
        Error::Closed { code, reason } => {
            details.set_item("code", *code)?;
            details.set_item("reason", reason)?;
            "closed"
        }
        _ => "other",
    };
    from_native(py, kind, &err.to_string(), details)
}

/// An exception of the package made from a kind name, a message and details.
pub(crate) fn from_native<'py>(
    py: Python<'py>,
    kind: &str,
    message: &str,
    details: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let make = FROM_NATIVE.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("compendium_wss._errors")?
                .getattr("_from_native")?
                .unbind(),
        )
    })?;
    make.bind(py).call1((kind, message, details))
}

/// Raise `err` as the package's exception.
pub(crate) fn raise(py: Python<'_>, err: &Error) -> PyErr {
    match exception(py, err) {
        Ok(exception) => PyErr::from_value(exception),
        Err(failed) => failed,
    }
}

fn stage_name(stage: ConnectStage) -> &'static str {
    match stage {
        ConnectStage::Tcp => "tcp",
        ConnectStage::Tls => "tls",
        ConnectStage::WebSocket => "websocket",
        ConnectStage::Startup => "startup",
        _ => "other",
    }
}

fn problem_name(problem: &TlsProblem) -> &'static str {
    match problem {
        TlsProblem::CaCertificateAsServerCertificate => "ca_certificate_as_server_certificate",
        TlsProblem::UnknownIssuer => "unknown_issuer",
        TlsProblem::NameMismatch { .. } => "name_mismatch",
        TlsProblem::Expired { .. } => "expired",
        TlsProblem::NotYetValid { .. } => "not_yet_valid",
        TlsProblem::PlainServer => "plain_server",
        TlsProblem::TlsServer => "tls_server",
        _ => "other",
    }
}
