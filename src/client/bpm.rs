//! The `bpm` command (SPEC sections 6 and 10): what BOSH drain scripts and
//! probes call. `stop` and `term` send TERM, never the operator's hold,
//! because a preStop drain right before a container restart must not leave
//! the new container stopped. `list` prints bpm's table for the whole pod.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::{
    Goal, Outcome, Target, drive, help_word_to_flag, main_process_lives, parse, pod_targets, query,
    tabwrite,
};
use crate::error::{Fatal, report};
use crate::exit;
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
    pub logs: crate::logs::BpmLogsFlags,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let invoked_as = args.first().cloned().unwrap_or_default();
    let args: BpmArgs = parse(help_word_to_flag(args), &bin_name())?;
    let base = args.base.resolve(Path::new(&invoked_as), LINK);
    let job = match (args.verb, args.job.as_deref()) {
        (Verb::List, None) if args.process.is_none() => return list(&base),
        (Verb::List, _) => {
            return Err(Fatal::Usage(
                "list takes no JOB or --process: it lists every job process (see --help)".into(),
            ));
        }
        (_, Some(job)) => job,
        (_, None) => {
            return Err(Fatal::Usage(
                "the following required arguments were not provided: <JOB> (see --help)".into(),
            ));
        }
    };
    let target = Target::named(&base, job, args.process.as_deref())?;
    let paths = target.paths.clone().expect("a named target has paths");
    if args.verb == Verb::Logs {
        return crate::logs::bpm::bpm_logs(&base, &paths.job, &paths.process, &args.logs);
    }
    args.logs.only_with_logs()?;
    let outcome = match args.verb {
        Verb::Pid => return Ok(print_pid(&paths)),
        Verb::Running => return Ok(print_running(&target)),
        Verb::Start => send(&target, ControlCommand::Start, Goal::Reach(State::Running)),
        Verb::Stop => send(&target, ControlCommand::Term, Goal::Reach(State::Stopped)),
        Verb::Term => send(&target, ControlCommand::Term, Goal::Ack),
        Verb::Quit => send(&target, ControlCommand::Quit, Goal::Ack),
        Verb::List | Verb::Logs => unreachable!("list and logs returned above"),
    };
    Ok(match outcome {
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
        // bpm has no "nobody answers" code of its own: any failure is 1.
        Outcome::NoAnswer(why) | Outcome::Failed(why) => {
            report(format!("{}: {why}", target.label));
            exit::FAILURE
        }
    })
}

/// `bpm` when invoked as bpm, `container-run bpm` otherwise: what usage
/// lines and error hints name.
fn bin_name() -> String {
    super::mode_bin_name("bpm")
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
            exit::OK
        }
        None => {
            println!("Process is not running");
            exit::FAILURE
        }
    }
}

fn print_running(target: &Target) -> u8 {
    let running = matches!(query(target), Outcome::Done(s) if s.state.is_up());
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
fn list(base: &Path) -> Result<u8, Fatal> {
    let targets = pod_targets(base)?;
    let outcomes = drive(
        &targets,
        &[ControlCommand::Status],
        Goal::Ack,
        super::ANSWER_TIMEOUT,
    );
    let mut rows: Vec<[String; 3]> = targets
        .iter()
        .zip(&outcomes)
        .map(|(target, outcome)| {
            let name = match target.label.split_once('/') {
                Some((job, process)) if job == process => job.to_string(),
                Some((job, process)) => format!("{job}.{process}"),
                None => target.label.clone(),
            };
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
                Outcome::TimedOut(_) => ("-".to_string(), "failed"),
            };
            [name, pid, status.to_string()]
        })
        .collect();
    rows.sort();
    let mut table = vec![["Name", "Pid", "Status"].map(String::from)];
    table.extend(rows);
    print!("{}", tabwrite(&table, 1));
    Ok(crate::exit::OK)
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
