//! Setting up the loop (SPEC sections 2, 4 and 8): signals blocked and read
//! through a signalfd, container-run a reaper, an operator's hold found,
//! and the options turned into the machine's plans. Everything here may
//! fail before the job is started.

use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::HANDLED;
use super::children::find_program;
use crate::cli::RunConfig;
use crate::error::Fatal;
use crate::machine::MachineConfig;
use crate::machine::drain::DrainPlan;
use crate::machine::hook::PostStartPlan;
use crate::state_files::{self, Base};

pub fn block_signals() -> Result<SignalFd, Fatal> {
    let mut mask = SigSet::empty();
    for sig in HANDLED {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|e| Fatal::setup("cannot block signals", e))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Fatal::setup("cannot create a signalfd", e))
}

pub fn become_reaper() -> Result<(), Fatal> {
    if std::process::id() == 1 {
        log::debug!("running as PID 1: reaping every orphan of the container");
    } else {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Fatal::setup("cannot become a child subreaper", e))?;
        log::debug!("child subreaper: orphans of the job are re-parented here");
    }
    Ok(())
}

/// Whether an operator's STOP holds the job stopped; said once at start-up,
/// with the command that lifts it as an operator can paste it: this very
/// binary (in a pod, the installed one on the shared volume) and BASE.
pub fn hold_found(base: &Base, cfg: &RunConfig) -> bool {
    let paths = &cfg.paths;
    let hold = state_files::hold_in_force(base, paths);
    if hold {
        let exe = std::env::current_exe()
            .map_or_else(|_| "container-run".to_string(), |p| p.display().to_string());
        let target = if paths.process == paths.job {
            paths.job.clone()
        } else {
            format!("{}/{}", paths.job, paths.process)
        };
        log::info!(
            "STOP marker {} found: staying stopped until `{exe} ctl start {target} --base-dir {}`",
            paths.stopped.display(),
            paths.base.display(),
        );
    }
    hold
}

/// The options turned into the machine's plans, once: the loop asks the
/// same options for a child's command only when a plan names that child.
pub fn machine_config(cfg: &RunConfig) -> MachineConfig {
    let post_start = match (&cfg.post_start, &cfg.condition) {
        (None, _) => PostStartPlan::None,
        (Some(_), None) => PostStartPlan::Direct,
        (Some(_), Some(_)) => PostStartPlan::AfterCondition,
    };
    let drain = match &cfg.drain {
        _ if cfg.drain_timeout.is_zero() => DrainPlan::Off,
        None => DrainPlan::Barrier {
            timeout: cfg.drain_timeout,
        },
        Some(program) => {
            // Looked up again when it is due: it may appear meanwhile.
            if find_program(program).is_none() {
                log::warn!(
                    "drain {} not found: the drain will be skipped unless it appears",
                    program.to_string_lossy()
                );
            }
            DrainPlan::Script {
                timeout: cfg.drain_timeout,
            }
        }
    };
    MachineConfig {
        stop_timeout: cfg.stop_timeout,
        post_start_timeout: cfg.post_start_timeout,
        condition_interval: cfg.condition_interval,
        post_start,
        drain,
        errand: cfg.errand,
        stop_signal: cfg.stop_signal,
    }
}
