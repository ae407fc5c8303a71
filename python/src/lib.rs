//! `compendium_wss._native`: the Rust half of the `compendium_wss` Python package.
//!
//! It is deliberately thin: every protocol rule lives in compendium-client; this crate only
//! moves calls and events across the language boundary. The shape of that boundary is
//! chosen for Python's two ways of waiting:
//!
//! - Each client's events and finished operations wait in an [`inbox::Inbox`]. A blocking
//!   caller waits on it in short GIL-released slices, checking for signals in between
//!   (Ctrl-C answers promptly); an asyncio caller registers the inbox's readiness file
//!   descriptor with `loop.add_reader` and then takes items without waiting. An awaitable
//!   never carries data, so cancelling one loses nothing.
//! - Operations ([`client::NativeClient::start_init`] and friends) are polled once on the
//!   caller's thread, so commands reach the client in call order, and only continue on the
//!   runtime if they must wait.
//! - No code on a tokio thread ever takes the GIL: nothing here can deadlock on it, and
//!   interpreter exit ([`runtime::shutdown`], from `atexit`) cannot find a runtime thread
//!   stuck inside Python.

mod client;
mod convert;
mod inbox;
mod runtime;

use pyo3::prelude::*;

/// The module object: the client class and the exit hook.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<client::NativeClient>()?;
    module.add_function(wrap_pyfunction!(runtime::shutdown, module)?)?;
    module.add("SLICE_SECONDS", inbox::SLICE.as_secs_f64())?;
    Ok(())
}
