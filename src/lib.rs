//! container-run: the entrypoint of a container that runs one BOSH job.
//! The modules follow SPEC.md: `cli` (section 1), `paths` and `state_files`
//! (section 2), `protocol` and `socket` (section 3), `machine` (with its
//! `hook` and `drain` regions), `supervisor` and `tree` (sections 4, 5, 8
//! and 9), `client` (sections 6 and 10), `error` and `exit` (section 7),
//! `peers` (section 8).

pub mod cli;
pub mod client;
pub mod datagram;
pub mod error;
pub mod exit;
pub mod install;
pub mod logger;
pub mod logs;
pub mod machine;
pub mod modes;
pub mod paths;
pub mod peers;
pub mod protocol;
pub mod rendezvous;
pub mod socket;
pub mod state_files;
pub mod supervisor;
pub mod tree;

/// The version, with the commit it was built from when known (build.rs).
pub const VERSION: &str = env!("CONTAINER_RUN_VERSION");
