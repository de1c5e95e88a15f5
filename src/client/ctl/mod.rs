//! `container-run ctl`: control container-runs without netcat (SPEC section
//! 6): one, several, or every one of the pod but some, all served at once
//! (the slowest stop sets the time, not the sum). What it prints is in
//! `show`.

mod show;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::{Drive, Goal, Member, Outcome, Target, TrustArgs};
use crate::cli::{help_word_to_flag, parse};
use crate::datagram::Trust;
use crate::error::Fatal;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, State};

pub use show::format_uptime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verb {
    /// START: start the job and wait until it runs (removes an operator's hold).
    Start,
    /// STOP: the operator's hold; stop the job and wait until nothing is left.
    Stop,
    /// TERM: stop without a hold, do not wait.
    Term,
    /// QUIT: SIGQUIT to the job's processes. Most programs exit on SIGQUIT
    /// (the container then restarts); the JVM and Go print a thread dump.
    Quit,
    /// Print the state (a table, or JSON lines with --json).
    Status,
    /// Stop without a hold and start again; wait until it runs.
    Restart,
    /// Send nothing; wait until the state is --until's.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Until {
    Running,
    Stopped,
}

/// Where the container-runs are: by name, by socket, or all but some.
#[derive(Debug, Args)]
pub struct Selector {
    /// JOB (its process JOB, or -p PROCESS) or JOB/PROCESS, as `ctl status`
    /// prints it; several at once.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// The process of the one JOB given [default: JOB].
    #[arg(short = 'p', long = "process", value_name = "PROCESS")]
    pub process: Option<String>,

    #[command(flatten)]
    pub base: crate::cli::BaseDir,

    /// Talk to the container-run at this socket.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["targets", "all", "except", "process"])]
    pub socket: Option<PathBuf>,

    /// Every container-run of the pod, all at once.
    #[arg(long, conflicts_with = "process")]
    pub all: bool,

    /// With --all: leave this TARGET out (repeatable).
    #[arg(long, value_name = "TARGET", requires = "all")]
    pub except: Vec<String>,
}

#[derive(Debug, Parser)]
#[command(
    name = "container-run ctl",
    version = crate::VERSION,
    about = "Control container-runs through their sockets",
    override_usage = "container-run ctl VERB TARGET... [-p PROCESS] [OPTIONS]\n       \
                      container-run ctl VERB --all [--except TARGET]... [OPTIONS]\n       \
                      container-run ctl VERB --socket PATH [OPTIONS]",
    after_help = "Suspend every job but the database, then resume:\n  \
                  container-run ctl stop --all --except database\n  \
                  container-run ctl start --all\n\n\
                  Exit codes: 0 done, 1 a wait timed out or a command failed, 2 usage, \
                  3 no container-run answers (or, with --all, none is found), 130 Ctrl-C \
                  ended the wait (the command, once sent, goes on).\n\
                  On a terminal, stop, start, restart and wait show what they wait for on one line."
)]
pub struct CtlArgs {
    #[arg(value_enum)]
    pub verb: Verb,

    #[command(flatten)]
    pub selector: Selector,

    /// How long stop, start, restart and wait wait for the state.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,

    /// Send the command and return once it is received.
    #[arg(long)]
    pub no_wait: bool,

    /// With wait: the state to wait for.
    #[arg(long, value_enum, value_name = "STATE")]
    pub until: Option<Until>,

    /// Print each container-run's status as a JSON line.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

/// How long `quit` watches what SIGQUIT did before it reports.
const QUIT_WATCH: Duration = Duration::from_secs(1);

/// The targets of a command, and for `--all` what the pod's listing
/// already learnt of each (their STATUS), which of them are gone, and how
/// many listed names did not answer.
pub struct Chosen {
    pub targets: Vec<Target>,
    pub known: Option<Vec<Outcome>>,
    pub gone: Vec<bool>,
    pub unanswered: usize,
}

impl CtlArgs {
    /// The combinations clap cannot say.
    fn check(&self) -> Result<(), Fatal> {
        let usage = |m: &str| Err(Fatal::Usage(format!("{m} (see container-run ctl --help)")));
        let sel = &self.selector;
        if sel.all && !sel.targets.is_empty() {
            return usage("--all takes no TARGET: leave some out with --except TARGET");
        }
        if !sel.all && sel.socket.is_none() && sel.targets.is_empty() {
            return usage("missing TARGET: name one or more, or use --all or --socket PATH");
        }
        if sel.process.is_some() && (sel.targets.len() != 1 || sel.targets[0].contains('/')) {
            return usage("-p PROCESS goes with one JOB: name several as JOB/PROCESS");
        }
        match (self.verb, self.until) {
            (Verb::Wait, None) => usage("wait needs --until running|stopped"),
            (Verb::Wait, _) if self.no_wait => usage("wait cannot be --no-wait"),
            (Verb::Wait, _) | (_, None) => Ok(()),
            (_, Some(_)) => usage("--until goes with wait"),
        }
    }

    /// What to send and what to wait for.
    fn plan(&self) -> (&'static [ControlCommand], Goal) {
        let (commands, goal): (&[ControlCommand], Goal) = match self.verb {
            Verb::Start => (&[ControlCommand::Start], Goal::Reach(State::Running)),
            Verb::Stop => (&[ControlCommand::Stop], Goal::Reach(State::Stopped)),
            Verb::Term => (&[ControlCommand::Term], Goal::Ack),
            Verb::Quit => (&[ControlCommand::Quit], Goal::Ack),
            Verb::Status => (&[ControlCommand::Status], Goal::Ack),
            Verb::Restart => (
                &[ControlCommand::Term, ControlCommand::Start],
                Goal::Restarted,
            ),
            Verb::Wait => (
                &[ControlCommand::Status],
                Goal::Reach(match self.until {
                    Some(Until::Stopped) => State::Stopped,
                    _ => State::Running,
                }),
            ),
        };
        (commands, if self.no_wait { Goal::Ack } else { goal })
    }
}

/// `JOB` (with `-p PROCESS`) or `JOB/PROCESS`, checked as names.
fn target_paths(base: &Path, text: &str, process: Option<&str>) -> Result<Paths, Fatal> {
    match text.split_once('/') {
        Some((job, process)) => Paths::new(base, job, process),
        None => Paths::new(base, text, process.unwrap_or(text)),
    }
}

impl Selector {
    pub fn targets(&self, trust: Trust) -> Result<Chosen, Fatal> {
        if let Some(socket) = &self.socket {
            return Ok(Chosen {
                targets: vec![Target::at_socket(socket)],
                known: None,
                gone: vec![false],
                unanswered: 0,
            });
        }
        let base = crate::cli::absolute(&self.base.base_dir)?;
        if self.all {
            return self.all_but(&base, trust);
        }
        let names = super::reach::pod_names(&base, &trust).ok();
        let mut targets: Vec<Target> = Vec::new();
        for text in &self.targets {
            let paths = target_paths(&base, text, self.process.as_deref())?;
            let target = Target::named(&base, &paths.job, Some(&paths.process), names.as_ref())?;
            if !targets.iter().any(|t| t.label == target.label) {
                targets.push(target);
            }
        }
        Ok(Chosen {
            gone: vec![false; targets.len()],
            targets,
            known: None,
            unanswered: 0,
        })
    }

    /// `--all [--except TARGET]...`: every container-run of the pod but
    /// those named. An `--except` that names none of them is refused before
    /// anything is sent: a mistyped name must not stop the one job that
    /// was to be spared.
    fn all_but(&self, base: &Path, trust: Trust) -> Result<Chosen, Fatal> {
        let (members, unanswered) = super::pod(base, trust)?;
        if members.is_empty() && unanswered == 0 {
            return Err(Fatal::NoAnswer(format!(
                "no container-run socket under {}",
                super::escape(&base.join("data").display().to_string())
            )));
        }
        let mut spared = vec![false; members.len()];
        for text in &self.except {
            let paths = target_paths(base, text, None)?;
            let hit = members
                .iter()
                .position(|m| m.job == paths.job && m.process == paths.process);
            match hit {
                Some(i) => spared[i] = true,
                None => {
                    return Err(Fatal::Usage(format!(
                        "--except {}: no container-run {}/{} in this pod (it has: {})",
                        super::escape(text),
                        super::escape(&paths.job),
                        super::escape(&paths.process),
                        labels(&members)
                    )));
                }
            }
        }
        let kept = members
            .into_iter()
            .zip(spared)
            .filter(|(_, s)| !s)
            .map(|(m, _)| m);
        let (mut targets, mut known, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for m in kept {
            gone.push(m.gone);
            known.push(m.outcome);
            targets.push(m.target);
        }
        Ok(Chosen {
            targets,
            known: Some(known),
            gone,
            unanswered,
        })
    }
}

fn labels(members: &[Member]) -> String {
    let all: Vec<&str> = members.iter().map(|m| m.target.label.as_str()).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let args: CtlArgs = parse(help_word_to_flag(args), "container-run ctl")?;
    args.check()?;
    let trust = args.trust.trust();
    let chosen = args.selector.targets(trust)?;
    let (commands, goal) = args.plan();
    let mut line = show::ProgressLine::new(goal != Goal::Ack, commands[0], args.timeout);
    let outcomes = match &chosen.known {
        Some(known) if args.verb == Verb::Status => known.clone(),
        _ => {
            let interrupt = (goal != Goal::Ack).then(interrupt_fd).flatten();
            let drive = Drive {
                commands,
                goal,
                timeout: args.timeout,
                trust,
                interrupt: interrupt.as_ref().map(std::os::fd::AsFd::as_fd),
            };
            drive.run_with_progress(&chosen.targets, &mut |e, seen| line.draw(e, seen))
        }
    };
    line.finish(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Interrupted { .. })),
    );
    let outcomes = match args.verb {
        Verb::Quit if !args.no_wait => watch_quit(&chosen.targets, outcomes, trust),
        _ => outcomes,
    };
    Ok(show::Report::new(&args, commands).print(&chosen, &outcomes))
}

/// SIGINT as an fd the wait polls: Ctrl-C ends the wait, not the command.
/// `None` (Ctrl-C then kills as usual) if it cannot be set up.
fn interrupt_fd() -> Option<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.thread_block().ok()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()
}

/// After QUIT: watch every target that answered, all at once, for
/// `QUIT_WATCH`, and say whether the job's process ended of it (most
/// programs do) rather than "running". Only what was seen is said.
fn watch_quit(targets: &[Target], outcomes: Vec<Outcome>, trust: Trust) -> Vec<Outcome> {
    let watched: Vec<usize> = (0..targets.len())
        .filter(|&i| matches!(&outcomes[i], Outcome::Done(s) if s.pid.is_some()))
        .collect();
    let drive = Drive {
        commands: &[ControlCommand::Status],
        goal: Goal::JobEnds,
        timeout: QUIT_WATCH,
        trust,
        interrupt: None,
    };
    let chosen: Vec<Target> = watched.iter().map(|&i| targets[i].clone()).collect();
    let mut after = drive.run(&chosen).into_iter();
    let mut outcomes = outcomes;
    for i in watched {
        let Some(seen) = after.next() else { break };
        let Outcome::Done(before) = &outcomes[i] else {
            continue;
        };
        let pid = before.pid.unwrap_or_default();
        outcomes[i] = match seen {
            Outcome::Done(s) => Outcome::Failed(format!(
                "SIGQUIT sent: the job's process {pid} ended ({}{})",
                s.state.as_str(),
                s.last_exit.map_or(String::new(), |c| format!(", exit {c}"))
            )),
            Outcome::TimedOut(_) => continue,
            // Its rendezvous name went with it: container-run has exited,
            // which it does only once the job is gone.
            _ if !still_bound(&targets[i], trust) => Outcome::Failed(format!(
                "SIGQUIT sent: the job's process {pid} ended, and container-run exited with it"
            )),
            other => Outcome::Failed(format!(
                "SIGQUIT sent to the job's process {pid}; then: {}",
                super::outcome_words(&other)
            )),
        };
    }
    outcomes
}

/// Whether the place a target was reached at is still bound: a rendezvous
/// name vanishes with its container-run. A socket file says nothing.
fn still_bound(target: &Target, trust: Trust) -> bool {
    let (super::reach::Reach::At(places), Some(paths)) = (&target.reach, &target.paths) else {
        return true;
    };
    let Ok(names) = super::reach::pod_names(&paths.base, &trust) else {
        return true;
    };
    places.iter().any(|p| match p {
        super::reach::Place::Abstract(name) => names.listing.names.contains(name),
        super::reach::Place::File { .. } => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<CtlArgs, String> {
        let a = CtlArgs::try_parse_from(words).map_err(|e| e.to_string())?;
        a.check().map_err(|e| e.to_string())?;
        Ok(a)
    }

    #[test]
    fn targets_by_name_several_and_all_but_some() {
        let a = args(&["ctl", "stop", "nats", "-p", "gnatsd", "--base-dir", "/b"]).unwrap();
        let t = a.selector.targets(Trust::new(None)).unwrap();
        assert_eq!(
            t.targets[0].paths.as_ref().unwrap().socket,
            PathBuf::from("/b/data/nats/gnatsd_containerrun.sock")
        );
        assert_eq!(t.targets[0].label, "nats/gnatsd");
        let a = args(&["ctl", "stop", "a", "b/c", "a/a", "--base-dir", "/b"]).unwrap();
        let t = a.selector.targets(Trust::new(None)).unwrap();
        let labels: Vec<&str> = t.targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["a/a", "b/c"], "a and a/a are one target");
        assert!(args(&["ctl", "stop", "--all", "--except", "db"]).is_ok());
        assert!(args(&["ctl", "wait", "x", "--until", "running"]).is_ok());
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for words in [
            &["ctl", "stop"][..],
            &["ctl", "stop", "--all", "nats"],
            &["ctl", "stop", "--except", "nats", "x"],
            &["ctl", "stop", "a", "b", "-p", "x"],
            &["ctl", "stop", "a/b", "-p", "x"],
            &["ctl", "wait", "a"],
            &["ctl", "stop", "a", "--until", "running"],
            &["ctl", "bogus", "nats"],
            &["ctl", "stop", "--socket", "/x", "a"],
        ] {
            assert!(args(words).is_err(), "{words:?}");
        }
        let bad = args(&["ctl", "stop", ".."]).unwrap();
        let err = bad.selector.targets(Trust::new(None));
        assert_eq!(err.err().unwrap().exit_code(), 2);
    }
}
