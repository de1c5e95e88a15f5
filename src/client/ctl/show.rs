//! What `ctl` prints (SPEC section 6): a progress line while it waits on
//! a terminal, one line per target, or `status`'s table with exactly one
//! row per container-run; nothing a socket's name or an answer carries
//! reaches the terminal unescaped (`client::escape`).

use std::io::Write;
use std::time::Duration;

use super::{Chosen, CtlArgs, Verb};
use crate::client::{Outcome, Seen, Target, combined_exit, escape, format_duration};
use crate::error::report;
use crate::protocol::{ControlCommand, Status};

/// While stop, start, restart or wait wait on a terminal: one line, redrawn
/// in place when what it says changes, and erased before the results print
/// (finished instead, when Ctrl-C ends the wait).
pub struct ProgressLine {
    on: bool,
    first: ControlCommand,
    timeout: Duration,
    shown: String,
}

impl ProgressLine {
    pub fn new(waits: bool, first: ControlCommand, timeout: Duration) -> ProgressLine {
        use std::io::IsTerminal;
        ProgressLine {
            on: waits && std::io::stdout().is_terminal(),
            first,
            timeout,
            shown: String::new(),
        }
    }

    pub fn draw(&mut self, elapsed: Duration, seen: &[Seen]) {
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

    /// Erase the line, or, after Ctrl-C, end it where it stands: the
    /// lines that follow say what was sent and what still goes on.
    pub fn finish(&mut self, interrupted: bool) {
        if !self.shown.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = if interrupted {
                writeln!(out)
            } else {
                write!(out, "\r\x1b[K")
            };
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

pub struct Report<'a> {
    json: bool,
    verb: Verb,
    timeout: Duration,
    /// The commands sent, for a timeout's message: they were received.
    received: String,
    _args: &'a CtlArgs,
}

impl<'a> Report<'a> {
    pub fn new(args: &'a CtlArgs, commands: &[ControlCommand]) -> Report<'a> {
        Report {
            json: args.json,
            verb: args.verb,
            timeout: args.timeout,
            received: commands
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            _args: args,
        }
    }

    /// Print every outcome; the exit code. A target that is gone (only its
    /// socket file is left) is shown as such and fails no `status`, `stop`
    /// or `term`: nothing of it runs.
    pub fn print(&self, chosen: &Chosen, outcomes: &[Outcome]) -> u8 {
        let outcomes: Vec<Outcome> = outcomes.iter().map(|o| self.with_hold(o)).collect();
        if self.verb == Verb::Status && !self.json {
            print_table(chosen, &outcomes, self);
        } else {
            for ((target, outcome), gone) in chosen.targets.iter().zip(&outcomes).zip(&chosen.gone)
            {
                if *gone {
                    report(format!(
                        "{}: gone: {}",
                        target.label,
                        crate::client::outcome_words(outcome)
                    ));
                } else {
                    self.report(target, outcome);
                }
            }
        }
        let counted: Vec<Outcome> = outcomes
            .into_iter()
            .zip(&chosen.gone)
            .filter(|(_, gone)| {
                !(**gone && matches!(self.verb, Verb::Status | Verb::Stop | Verb::Term))
            })
            .map(|(o, _)| o)
            .collect();
        let code = combined_exit(&counted);
        if chosen.unanswered > 0 {
            code.max(crate::exit::NO_ANSWER)
        } else {
            code
        }
    }

    /// An operator's STOP is a hold only if its marker was written.
    fn with_hold(&self, outcome: &Outcome) -> Outcome {
        match outcome {
            Outcome::Done(s)
                if self.verb == Verb::Stop
                    && self.timeout > Duration::ZERO
                    && !s.hold
                    && s.state == crate::protocol::State::Stopped =>
            {
                Outcome::Failed(format!(
                    "{}, but the STOP marker could not be written: a container restart will run the job again",
                    describe(s)
                ))
            }
            other => other.clone(),
        }
    }

    fn report(&self, target: &Target, outcome: &Outcome) {
        match outcome {
            Outcome::Done(status) if self.json => print!("{}", status.to_line()),
            Outcome::Done(status) => match self.verb {
                Verb::Status => {}
                Verb::Quit => println!("{}: SIGQUIT sent; {}", target.label, describe(status)),
                _ => println!("{}: {}", target.label, describe(status)),
            },
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
            Outcome::Interrupted { sent, last } => {
                report(interrupted(target, *sent, last.as_ref(), &self.received))
            }
        }
    }
}

/// What Ctrl-C leaves behind: whether the command went out, and what the
/// container-run was last seen doing (it goes on without ctl).
fn interrupted(target: &Target, sent: bool, last: Option<&Status>, received: &str) -> String {
    if !sent {
        return format!(
            "{}: interrupted before {received} was sent: nothing done",
            target.label
        );
    }
    let doing = last.map_or_else(
        || "no answer yet".to_string(),
        |s| {
            let mut d = describe(s);
            if let Some(left) = s.stop_left_ms {
                d.push_str(&format!(", SIGKILL in {} s", left.div_ceil(1000)));
            }
            d
        },
    );
    format!(
        "{}: interrupted: {received} was sent and goes on in container-run (last seen {doing})",
        target.label
    )
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

/// The table of every container-run that answered, and of those that are
/// gone; the others get their error line on stderr, and with none to show
/// there is no table at all.
fn print_table(chosen: &Chosen, outcomes: &[Outcome], how: &Report) {
    let (targets, gone) = (&chosen.targets, &chosen.gone);
    // With --all, one row per container-run of the pod, answering or not.
    let listed = chosen.known.is_some();
    let mut rows = vec![COLUMNS.map(String::from)];
    for ((target, outcome), gone) in targets.iter().zip(outcomes).zip(gone) {
        if *gone {
            rows.push(gone_row(target));
            continue;
        }
        match outcome {
            Outcome::Done(s) => rows.push([
                escape(&s.job),
                escape(&s.process),
                s.state.as_str().into(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.starts.to_string(),
                s.uptime_ms.map_or("-".into(), format_uptime),
                s.last_exit.map_or("-".into(), |c| c.to_string()),
                s.post_start.as_str().into(),
                drain_cell(s),
                if s.hold { "yes" } else { "no" }.into(),
            ]),
            // Said on stderr; its row still stands when ctl knows its name
            // (a listed container-run that does not answer).
            other => {
                how.report(target, other);
                if listed && target.paths.is_some() {
                    rows.push(named_row(target, "unknown"));
                }
            }
        }
    }
    if rows.len() == 1 {
        return;
    }
    print!("{}", crate::client::tabwrite(&rows, 2));
}

/// A container-run killed outright: only its socket file is left.
fn gone_row(target: &Target) -> [String; 10] {
    named_row(target, "gone")
}

/// A row that knows only the name and a state.
fn named_row(target: &Target, state: &str) -> [String; 10] {
    let (job, process) = target
        .paths
        .as_ref()
        .map_or((target.label.clone(), "-".to_string()), |p| {
            (escape(&p.job), escape(&p.process))
        });
    let mut row = [
        "-".to_string(),
        "-".into(),
        state.into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ];
    row[0] = job;
    row[1] = process;
    row
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
}
