//! The `compendium-server` binary as a child process, judged from outside as an operator
//! would — through the workspace's one process harness (`compendium-harness`).

use std::path::Path;
use std::process::Command;

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use compendium_harness::{Relay, rss_kib_of};

/// The debug build of the relay.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_compendium-server"))
}

/// The relay binary with a clean environment for logs and no flags.
pub fn server() -> Command {
    let mut command = Command::new(bin());
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// The relay on free loopback ports (WebSocket and metrics) with `args` added, ready.
pub fn relay(args: &[&str]) -> Relay {
    let mut command = Relay::command(bin());
    command.args(args);
    Relay::start(command).expect("the relay starts")
}
