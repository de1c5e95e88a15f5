//! The `bpm` command (SPEC section 6): what BOSH drain scripts and probes
//! call. `stop` and `term` send TERM, never the operator's hold, because a
//! preStop drain right before a container restart must not leave the new
//! container stopped.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::{Goal, Outcome, Target, drive, parse_or_exit, query};
use crate::error::Fatal;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, State};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verb {
    /// Start the process and wait until it runs.
    Start,
    /// Stop the process (no hold) and wait up to 30 s until it is gone.
    Stop,
    /// Stop the process (no hold), do not wait.
    Term,
    /// SIGQUIT to the process.
    Quit,
    /// Print the pid, or `Process is not running` and exit 1.
    Pid,
    /// Exit 0 if the process runs, 1 if not (yes/no on a terminal).
    Running,
}

#[derive(Debug, Parser)]
#[command(
    name = "bpm",
    version = crate::VERSION,
    about = "Control a job process run by container-run (bpm compatible)"
)]
pub struct BpmArgs {
    #[arg(value_enum)]
    pub verb: Verb,
    /// The job.
    #[arg(value_name = "JOB")]
    pub job: String,
    /// The process of the job [default: JOB].
    #[arg(short = 'p', long = "process", value_name = "PROCESS")]
    pub process: Option<String>,
    /// Root of the sockets [default: from the path bpm was invoked by when
    /// it is BASE/jobs/bpm/bin/bpm, else /var/vcap].
    #[arg(long = "base-dir", value_name = "DIR", env = "CONTAINER_RUN_BASE_DIR")]
    pub base_dir: Option<PathBuf>,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let invoked_as = args.first().cloned().unwrap_or_default();
    let args = parse_or_exit(BpmArgs::try_parse_from(args))?;
    let base = args
        .base_dir
        .clone()
        .or_else(|| base_from_shim_path(Path::new(&invoked_as)))
        .unwrap_or_else(|| PathBuf::from("/var/vcap"));
    let target = Target::named(&base, &args.job, args.process.as_deref())?;
    let paths = target.paths().expect("a named target has paths");
    let outcome = match args.verb {
        Verb::Pid => return Ok(print_pid(&paths)),
        Verb::Running => return Ok(print_running(&target)),
        Verb::Start => send(&target, ControlCommand::Start, Goal::Reach(State::Running)),
        Verb::Stop => send(&target, ControlCommand::Term, Goal::Reach(State::Stopped)),
        Verb::Term => send(&target, ControlCommand::Term, Goal::Ack),
        Verb::Quit => send(&target, ControlCommand::Quit, Goal::Ack),
    };
    Ok(match outcome {
        Outcome::Done(_) => 0,
        Outcome::TimedOut(last) => {
            eprintln!(
                "bpm: {}: timed out after {WAIT:?}, still {}",
                target.label,
                last.map_or("unknown", |s| s.state.as_str())
            );
            1
        }
        Outcome::NoAnswer(why) | Outcome::Failed(why) => {
            eprintln!("bpm: {}: {why}", target.label);
            1
        }
    })
}

fn send(target: &Target, cmd: ControlCommand, goal: Goal) -> Outcome {
    drive(std::slice::from_ref(target), &[cmd], goal, WAIT).remove(0)
}

fn print_pid(paths: &Paths) -> u8 {
    let pid = std::fs::read_to_string(&paths.pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match pid {
        Some(pid) => {
            println!("{pid}");
            0
        }
        None => {
            println!("Process is not running");
            1
        }
    }
}

fn print_running(target: &Target) -> u8 {
    let running = matches!(query(target), Outcome::Done(s) if s.state.is_up());
    if std::io::stdout().is_terminal() {
        println!("{}", if running { "yes" } else { "no" });
    }
    if running { 0 } else { 1 }
}

/// `BASE/jobs/bpm/bin/bpm` -> `BASE`, so the shim works under any base
/// directory without configuration.
pub fn base_from_shim_path(invoked: &Path) -> Option<PathBuf> {
    let bin = invoked.parent()?;
    let bpm = bin.parent()?;
    let jobs = bpm.parent()?;
    let names = (bin.file_name()?, bpm.file_name()?, jobs.file_name()?);
    (names == ("bin".as_ref(), "bpm".as_ref(), "jobs".as_ref()))
        .then(|| jobs.parent().map(Path::to_path_buf))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_derived_from_the_shim_path() {
        assert_eq!(
            base_from_shim_path(Path::new("/var/vcap/jobs/bpm/bin/bpm")),
            Some(PathBuf::from("/var/vcap"))
        );
        assert_eq!(
            base_from_shim_path(Path::new("/tmp/x/jobs/bpm/bin/bpm")),
            Some(PathBuf::from("/tmp/x"))
        );
        assert_eq!(base_from_shim_path(Path::new("bpm")), None);
        assert_eq!(base_from_shim_path(Path::new("/usr/bin/bpm")), None);
    }
}
