//! `container-run ctl`: control one container-run, or every one under a base
//! directory, without netcat (SPEC section 6).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use super::{
    Drive, Goal, Outcome, Seen, Target, TrustArgs, combined_exit, format_duration,
    help_word_to_flag, parse,
};
use crate::error::{Fatal, report};
use crate::protocol::{ControlCommand, State, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verb {
    /// START: start the job and wait until it runs (removes an operator's hold).
    Start,
    /// STOP: the operator's hold; stop the job and wait until nothing is left.
    Stop,
    /// TERM: stop without a hold, do not wait.
    Term,
    /// QUIT: SIGQUIT to the job's processes.
    Quit,
    /// Print the state (a table, or JSON lines with --json).
    Status,
    /// Stop without a hold and start again; wait until it runs.
    Restart,
}

/// Where the container-runs are: by name, by socket, or all of them.
#[derive(Debug, Args)]
pub struct Selector {
    /// The job [required unless --socket or --all].
    #[arg(value_name = "JOB", required_unless_present_any = ["socket", "all"])]
    pub job: Option<String>,

    /// The process of the job [default: JOB].
    #[arg(short = 'p', long = "process", value_name = "PROCESS")]
    pub process: Option<String>,

    #[command(flatten)]
    pub base: crate::cli::BaseDir,

    /// Talk to the container-run at this socket.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["job", "all"])]
    pub socket: Option<PathBuf>,

    /// Every `*_containerrun.sock` under BASE/data, all at once.
    #[arg(long, conflicts_with_all = ["job", "process"])]
    pub all: bool,
}

/// The targets of a command, and for `--all` what the pod's listing
/// already learnt of each (their STATUS) and how many names did not answer.
pub struct Chosen {
    pub targets: Vec<Target>,
    pub known: Option<Vec<Outcome>>,
    pub unanswered: usize,
}

impl Selector {
    pub fn targets(&self, trust: crate::datagram::Trust) -> Result<Chosen, Fatal> {
        let one = |target| Chosen {
            targets: vec![target],
            known: None,
            unanswered: 0,
        };
        if let Some(socket) = &self.socket {
            return Ok(one(Target::at_socket(socket)));
        }
        let base = crate::cli::absolute(&self.base.base_dir)?;
        if self.all {
            let (members, unanswered) = super::pod(&base, trust)?;
            if members.is_empty() && unanswered == 0 {
                return Err(Fatal::NoAnswer(format!(
                    "no container-run socket under {}",
                    super::escape(&base.join("data").display().to_string())
                )));
            }
            let (targets, known) = members.into_iter().map(|m| (m.target, m.outcome)).unzip();
            return Ok(Chosen {
                targets,
                known: Some(known),
                unanswered,
            });
        }
        let names = super::reach::pod_names(&base).ok();
        let job = self.job.as_deref().unwrap_or_default();
        Ok(one(Target::named(
            &base,
            job,
            self.process.as_deref(),
            names.as_ref(),
        )?))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "container-run ctl",
    version = crate::VERSION,
    about = "Control container-run through its socket",
    after_help = "Exit codes: 0 done, 1 a wait timed out or a command failed, 2 usage, \
                  3 no container-run answers at a socket (or, with --all, none is found).\n\
                  On a terminal, stop, start and restart show what they wait for on one line."
)]
pub struct CtlArgs {
    #[arg(value_enum)]
    pub verb: Verb,

    #[command(flatten)]
    pub selector: Selector,

    /// How long stop, start and restart wait for the state.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,

    /// Send the command and return once it is received.
    #[arg(long)]
    pub no_wait: bool,

    /// Print each container-run's status as a JSON line.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let args: CtlArgs = parse(help_word_to_flag(args), "container-run ctl")?;
    let trust = args.trust.trust();
    let chosen = args.selector.targets(trust)?;
    let targets = chosen.targets;
    let (commands, goal): (&[ControlCommand], Goal) = match args.verb {
        Verb::Start => (&[ControlCommand::Start], Goal::Reach(State::Running)),
        Verb::Stop => (&[ControlCommand::Stop], Goal::Reach(State::Stopped)),
        Verb::Term => (&[ControlCommand::Term], Goal::Ack),
        Verb::Quit => (&[ControlCommand::Quit], Goal::Ack),
        Verb::Status => (&[ControlCommand::Status], Goal::Ack),
        Verb::Restart => (
            &[ControlCommand::Term, ControlCommand::Start],
            Goal::Restarted,
        ),
    };
    let goal = if args.no_wait { Goal::Ack } else { goal };
    let mut line = ProgressLine {
        on: goal != Goal::Ack && std::io::stdout().is_terminal(),
        first: commands[0],
        timeout: args.timeout,
        shown: String::new(),
    };
    let outcomes = match chosen.known {
        Some(known) if args.verb == Verb::Status => known,
        _ => Drive {
            commands,
            goal,
            timeout: args.timeout,
            trust,
        }
        .run_with_progress(&targets, &mut |e, seen| line.draw(e, seen)),
    };
    line.clear();
    // An operator's STOP is a hold only if its marker was written.
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Done(s) if args.verb == Verb::Stop && !args.no_wait && !s.hold => {
                Outcome::Failed(format!(
                    "{}, but the STOP marker could not be written: a container restart will run the job again",
                    describe(&s)
                ))
            }
            other => other,
        })
        .collect();
    let received = commands
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(" and ");
    let how = Report {
        json: args.json,
        verb: args.verb,
        timeout: args.timeout,
        received: &received,
    };
    if args.verb == Verb::Status && !args.json {
        print_table(&targets, &outcomes, &how);
    } else {
        for (target, outcome) in targets.iter().zip(&outcomes) {
            how.report(target, outcome);
        }
    }
    let code = combined_exit(&outcomes);
    Ok(if chosen.unanswered > 0 {
        code.max(crate::exit::FAILURE)
    } else {
        code
    })
}

/// While stop, start or restart wait on a terminal: one line, redrawn in
/// place when what it says changes, and erased before the results print.
/// The reply does not tell the stop timeout, so the line says how long ctl
/// itself waits.
struct ProgressLine {
    on: bool,
    first: ControlCommand,
    timeout: Duration,
    shown: String,
}

impl ProgressLine {
    fn draw(&mut self, elapsed: Duration, seen: &[Seen]) {
        if !self.on {
            return;
        }
        let text = progress_text(self.first, self.timeout, elapsed, seen);
        if text != self.shown {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r{text}\x1b[K");
            let _ = out.flush();
            self.shown = text;
        }
    }

    fn clear(&mut self) {
        if !self.shown.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        }
    }
}

/// `nats/nats: stopping, 4 s (waiting up to 30s)`, or for several targets
/// `STOP: 3/10 done, 4 s (waiting up to 30s)`.
fn progress_text(
    first: ControlCommand,
    timeout: Duration,
    elapsed: Duration,
    seen: &[Seen],
) -> String {
    let waited = format!(
        "{} s (waiting up to {})",
        elapsed.as_secs(),
        format_duration(timeout)
    );
    match seen {
        [one] => {
            let state = one.last.map_or_else(
                || format!("{} sent", first.as_str()),
                |s| s.state.as_str().into(),
            );
            // What container-run itself waits for, when it says.
            let next = one.last.and_then(|s| {
                let ms = |v: u64| format!("{} s", v.div_ceil(1000));
                match (s.stop_left_ms, s.drain_left_ms) {
                    (Some(left), _) => Some(format!("SIGKILL in {}", ms(left))),
                    (None, Some(left)) => Some(format!("drain deadline in {}", ms(left))),
                    _ => None,
                }
            });
            match next {
                Some(next) => format!(
                    "{}: {state}, {} s ({next})",
                    one.target.label,
                    elapsed.as_secs()
                ),
                None => format!("{}: {state}, {waited}", one.target.label),
            }
        }
        many => {
            let done = many.iter().filter(|s| s.done).count();
            format!("{}: {done}/{} done, {waited}", first.as_str(), many.len())
        }
    }
}

struct Report<'a> {
    json: bool,
    verb: Verb,
    timeout: Duration,
    /// The commands sent, for a timeout's message: they were received.
    received: &'a str,
}

impl Report<'_> {
    fn report(&self, target: &Target, outcome: &Outcome) {
        match outcome {
            Outcome::Done(status) if self.json => print!("{}", status.to_line()),
            Outcome::Done(status) => {
                if self.verb != Verb::Status {
                    println!("{}: {}", target.label, describe(status));
                }
            }
            Outcome::TimedOut(last) => report(format!(
                "{}: timed out after {}, still {} ({} received)",
                target.label,
                format_duration(self.timeout),
                last.as_ref().map_or("unknown", |s| s.state.as_str()),
                self.received
            )),
            Outcome::NoAnswer(why) | Outcome::Failed(why) => {
                report(format!("{}: {why}", target.label))
            }
        }
    }
}

/// Where the drain stands, with what is left of its deadline while it runs:
/// `running (9m55s left)`, `waiting (2s left)`, `done`, `-` without one.
fn drain_cell(s: &Status) -> String {
    match (s.drain, s.drain_left_ms) {
        (crate::protocol::Drain::None, _) => "-".into(),
        (d, Some(left)) => format!(
            "{} ({} left)",
            d.as_str(),
            format_duration(Duration::from_millis(left))
        ),
        (d, None) => d.as_str().into(),
    }
}

fn describe(s: &Status) -> String {
    match s.pid {
        Some(pid) => format!("{} (pid {pid})", s.state.as_str()),
        None => s.state.as_str().to_string(),
    }
}

const COLUMNS: [&str; 10] = [
    "JOB",
    "PROCESS",
    "STATE",
    "PID",
    "STARTS",
    "UPTIME",
    "LAST-EXIT",
    "POST-START",
    "DRAIN",
    "HOLD",
];

/// The table of every container-run that answered; the others get their
/// error line on stderr, and with none answering there is no table at all.
fn print_table(targets: &[Target], outcomes: &[Outcome], how: &Report) {
    let mut rows = vec![COLUMNS.map(String::from)];
    for (target, outcome) in targets.iter().zip(outcomes) {
        match outcome {
            Outcome::Done(s) => rows.push([
                super::escape(&s.job),
                super::escape(&s.process),
                s.state.as_str().into(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.starts.to_string(),
                s.uptime_ms.map_or("-".into(), format_uptime),
                s.last_exit.map_or("-".into(), |c| c.to_string()),
                s.post_start.as_str().into(),
                drain_cell(s),
                if s.hold { "yes" } else { "no" }.into(),
            ]),
            other => how.report(target, other),
        }
    }
    if rows.len() == 1 {
        return;
    }
    print!("{}", super::tabwrite(&rows, 2));
}

/// `45s`, `12m05s`, `3h07m`, `2d04h`.
pub fn format_uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        assert_eq!(format_uptime(999), "0s");
        assert_eq!(format_uptime(45_000), "45s");
        assert_eq!(format_uptime(725_000), "12m05s");
        assert_eq!(format_uptime(3 * 3_600_000 + 7 * 60_000), "3h07m");
        assert_eq!(format_uptime(52 * 3_600_000), "2d04h");
    }

    #[test]
    fn selectors() {
        let a =
            CtlArgs::try_parse_from(["ctl", "stop", "nats", "-p", "gnatsd", "--base-dir", "/b"])
                .unwrap();
        assert_eq!(a.verb, Verb::Stop);
        let t = a
            .selector
            .targets(crate::datagram::Trust::new(None))
            .unwrap();
        assert_eq!(
            t.targets[0].paths.as_ref().unwrap().socket,
            PathBuf::from("/b/data/nats/gnatsd_containerrun.sock")
        );
        assert_eq!(t.targets[0].label, "nats/gnatsd");
        assert!(CtlArgs::try_parse_from(["ctl", "stop"]).is_err());
        assert!(CtlArgs::try_parse_from(["ctl", "stop", "--all", "nats"]).is_err());
        assert!(CtlArgs::try_parse_from(["ctl", "bogus", "nats"]).is_err());
        let bad = CtlArgs::try_parse_from(["ctl", "stop", ".."]).unwrap();
        let err = bad.selector.targets(crate::datagram::Trust::new(None));
        assert_eq!(err.err().unwrap().exit_code(), 2);
    }
}
