//! `trident deploy`: provision Jetson Nano units and roll packages out to them over SSH, in
//! waves, never leaving a unit without a working release.
//!
//! The transport is the system OpenSSH client, so `~/.ssh/config`, agents, jump hosts and
//! `known_hosts` work as they do for the field engineer's own `ssh` (host key checking stays on).
//! Remote work is done by constant POSIX sh scripts that receive every value as a quoted
//! positional parameter, after the value was checked against a narrow alphabet ([`quote`]).

pub mod error;
pub mod inventory;
pub mod lock;
pub mod mender_module;
pub mod provision;
pub mod push;
pub mod quote;
pub mod recover;
pub mod rollout;
pub mod ssh;
pub mod status;
pub mod unit_facts;
pub mod unit_scripts;
pub mod upload;

pub use error::{Error, Result};
