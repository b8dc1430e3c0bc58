//! The `kes` client CLI, run as a subprocess against real `kes server` subprocesses on
//! 127.0.0.1:0: exit codes, stdout and stderr asserted, for pipes (byte-exact where
//! upstream is) and for terminals (under `script`). Issue 5; spec `kes-config-cli.md` §4, §6.

#[path = "common/mod.rs"]
mod common;
#[path = "cli/harness.rs"]
mod harness;

#[path = "cli/connection.rs"]
mod connection;
#[path = "cli/framing.rs"]
mod framing;
#[path = "cli/identity.rs"]
mod identity;
#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/observe.rs"]
mod observe;
#[path = "cli/policies.rs"]
mod policies;
#[path = "cli/tutorial.rs"]
mod tutorial;
#[path = "cli/usage.rs"]
mod usage;
