//! The `bpm` command (SPEC sections 6 and 10): what BOSH drain scripts and
//! probes call. `stop` and `term` send TERM, never the operator's hold,
//! because a preStop drain right before a container restart must not leave
//! the new container stopped. `list` prints bpm's table for the whole pod.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::{Drive, Goal, Outcome, Target, TrustArgs, main_process_lives, query, tabwrite};
use crate::cli::{help_word_to_flag, parse};
use crate::datagram::Trust;
use crate::error::{Fatal, report};
use crate::exit;
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
    /// Every job process of the pod: Name, Pid, Status (takes no JOB).
    List,
    /// The last lines of the process's stdout.log (-e stderr, -a all), -f follows.
    Logs,
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
    /// The job [required, except for list].
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    /// The process of the job [default: JOB].
    #[arg(short = 'p', long = "process", value_name = "PROCESS")]
    pub process: Option<String>,
    #[command(flatten)]
    pub base: super::LinkedBaseDir,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub logs: crate::logs::BpmLogsFlags,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let invoked_as = args.first().cloned().unwrap_or_default();
    let args: BpmArgs = parse(help_word_to_flag(args), &bin_name())?;
    let base = args.base.resolve(Path::new(&invoked_as), LINK);
    let trust = args.trust.trust();
    if args.verb == Verb::List {
        return match (&args.job, &args.process) {
            (None, None) => list(&base, trust),
            _ => Err(Fatal::Usage(format!(
                "list takes no JOB or --process: it lists every job process (see {} --help)",
                bin_name()
            ))),
        };
    }
    let Some(job) = args.job.as_deref() else {
        return Err(Fatal::Usage(format!(
            "missing required argument: <JOB> (see {} --help)",
            bin_name()
        )));
    };
    if args.verb == Verb::Logs {
        let paths = crate::paths::Paths::new(
            &crate::cli::absolute(&base)?,
            job,
            args.process.as_deref().unwrap_or(job),
        )?;
        return crate::logs::bpm::bpm_logs(&base, &paths.job, &paths.process, &args.logs);
    }
    args.logs.only_with_logs()?;
    let names = super::reach::pod_names(&crate::cli::absolute(&base)?, &trust).ok();
    let target = Target::named(&base, job, args.process.as_deref(), names.as_ref())?;
    let send = |cmd, goal| {
        Drive {
            commands: &[cmd],
            goal,
            timeout: WAIT,
            trust,
            interrupt: None,
        }
        .run(std::slice::from_ref(&target))
        .remove(0)
    };
    let outcome = match args.verb {
        Verb::Pid => return Ok(print_pid(&target, trust)),
        Verb::Running => return Ok(print_running(&target, trust)),
        Verb::Start => send(ControlCommand::Start, Goal::Reach(State::Running)),
        Verb::Stop => send(ControlCommand::Term, Goal::Reach(State::Stopped)),
        Verb::Term => send(ControlCommand::Term, Goal::Ack),
        Verb::Quit => send(ControlCommand::Quit, Goal::Ack),
        Verb::List | Verb::Logs => unreachable!("list and logs return before"),
    };
    Ok(exit_for(&target, outcome))
}

/// bpm's exit: 0 done, 1 anything else (bpm has no "nobody answers"
/// code of its own), with the reason on stderr.
fn exit_for(target: &Target, outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done(_) => exit::OK,
        Outcome::TimedOut(last) => {
            report(format!(
                "{}: timed out after {}, still {}",
                target.label,
                super::format_duration(WAIT),
                last.map_or("unknown", |s| s.state.as_str())
            ));
            exit::FAILURE
        }
        other => failed(target, &other),
    }
}

/// Say why `target` failed; exit 1.
fn failed(target: &Target, outcome: &Outcome) -> u8 {
    report(format!(
        "{}: {}",
        target.label,
        super::outcome_words(outcome)
    ));
    exit::FAILURE
}

/// `bpm` when invoked as bpm, `container-run bpm` otherwise: what usage
/// lines and error hints name.
fn bin_name() -> String {
    crate::cli::mode_bin_name("bpm")
}

/// The pid as container-run itself tells it (SPEC section 6): the pidfile
/// lies in a directory the job's user owns, so it proves nothing; a pid is
/// printed only when a believed container-run says its job runs with it.
fn print_pid(target: &Target, trust: Trust) -> u8 {
    match query(target, trust) {
        Outcome::Done(s) if main_process_lives(&s) && s.pid.is_some() => {
            println!("{}", s.pid.unwrap_or_default());
            exit::OK
        }
        Outcome::Done(_) => {
            println!("Process is not running");
            exit::FAILURE
        }
        other => failed(target, &other),
    }
}

/// `yes`/`no` on a terminal; exit 0 or 1. Why nothing answered is said on
/// stderr: a readiness probe's log shows it.
fn print_running(target: &Target, trust: Trust) -> u8 {
    let running = match query(target, trust) {
        Outcome::Done(s) => s.state.is_up(),
        other => {
            failed(target, &other);
            false
        }
    };
    if std::io::stdout().is_terminal() {
        println!("{}", if running { "yes" } else { "no" });
    }
    if running { exit::OK } else { exit::FAILURE }
}

/// `bpm list`: every container-run of the pod, asked at once, in bpm's own
/// statuses: `running` while the main process lives; `failed` when nobody
/// answers at a socket that is still there (a container-run killed
/// outright, or hung); otherwise `stopped`. A job that ends by itself with a
/// non-zero status makes container-run exit and remove its socket (SPEC
/// section 4), so a live container-run's non-zero `last_exit` is the stop
/// signal's doing (STOP, TERM, `bpm stop`) and reads `stopped`, as bpm
/// shows a job after `bpm stop`.
fn list(base: &Path, trust: Trust) -> Result<u8, Fatal> {
    let (members, unanswered) = super::pod(base, trust)?;
    let mut rows: Vec<[String; 3]> = members
        .iter()
        .map(|m| {
            let (job, process) = (super::escape(&m.job), super::escape(&m.process));
            let name = if job == process {
                job
            } else {
                format!("{job}.{process}")
            };
            let target = &m.target;
            let outcome = &m.outcome;
            let (pid, status) = match outcome {
                Outcome::Done(s) if main_process_lives(s) => (
                    s.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                    "running",
                ),
                Outcome::Done(_) => ("-".to_string(), "stopped"),
                Outcome::Failed(why) | Outcome::NoAnswer(why) => {
                    if matches!(outcome, Outcome::Failed(_)) {
                        eprintln!("bpm: {}: {why}", target.label);
                    }
                    ("-".to_string(), "failed")
                }
                Outcome::Interrupted { .. } => ("-".to_string(), "failed"),
                Outcome::TimedOut(_) => ("-".to_string(), "failed"),
            };
            [name, pid, status.to_string()]
        })
        .collect();
    rows.sort();
    let mut table = vec![["Name", "Pid", "Status"].map(String::from)];
    table.extend(rows);
    print!("{}", tabwrite(&table, 1));
    Ok(if unanswered > 0 {
        exit::FAILURE
    } else {
        exit::OK
    })
}

/// Where container-run installs the bpm link, under BASE.
pub const LINK: &str = "jobs/bpm/bin/bpm";

#[cfg(test)]
mod tests {
    use super::*;

    fn base_of(invoked: &Path) -> Option<std::path::PathBuf> {
        crate::client::base_from_link(invoked, LINK)
    }

    #[test]
    fn base_is_derived_from_the_shim_path() {
        assert_eq!(
            base_of(Path::new("/var/vcap/jobs/bpm/bin/bpm")),
            Some(std::path::PathBuf::from("/var/vcap"))
        );
        assert_eq!(
            base_of(Path::new("/tmp/x/jobs/bpm/bin/bpm")),
            Some(std::path::PathBuf::from("/tmp/x"))
        );
        assert_eq!(base_of(Path::new("bpm")), None);
        assert_eq!(base_of(Path::new("/usr/bin/bpm")), None);
        assert_eq!(
            base_of(Path::new("jobs/bpm/bin/bpm")),
            Some(std::path::PathBuf::from("."))
        );
    }

    fn rows(cells: &[&[&str]]) -> Vec<Vec<String>> {
        cells
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn tabwriter_layout_is_gos_with_padding_one() {
        // What Go's tabwriter.NewWriter(w, 0, 0, 1, ' ', 0) prints for the
        // same cells, each row written as "a\tb\tc\n".
        let table = rows(&[
            &["Name", "Pid", "Status"],
            &["job-process-2", "23456", "created"],
            &["nats", "-", "failed"],
        ]);
        assert_eq!(
            tabwrite(&table, 1),
            "Name          Pid   Status\n\
             job-process-2 23456 created\n\
             nats          -     failed\n"
        );
        // The header alone sets the widths; the last column is never padded.
        assert_eq!(
            tabwrite(
                &rows(&[&["Name", "Pid", "Status"], &["a", "1", "running"]]),
                1
            ),
            "Name Pid Status\na    1   running\n"
        );
        assert_eq!(
            tabwrite(&rows(&[&["Name", "Pid", "Status"]]), 1),
            "Name Pid Status\n"
        );
        // Characters, not bytes.
        assert_eq!(
            tabwrite(&rows(&[&["é", "x"], &["ab", "y"]]), 1),
            "é  x\nab y\n"
        );
    }

    #[test]
    fn list_takes_no_job() {
        let a = BpmArgs::try_parse_from(["bpm", "list"]).unwrap();
        assert_eq!(a.verb, Verb::List);
        assert!(a.job.is_none());
    }
}
