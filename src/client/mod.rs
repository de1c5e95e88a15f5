//! The operator's side of the control socket (SPEC sections 6 and 10):
//! `ctl`, `bpm`, `monit` and `probe` share one way to parse their command
//! lines, reach container-runs, send a command to each, and wait, on all of
//! them at once, until each has reached the state asked for. No threads:
//! one `poll` over one socket per target.

pub mod bpm;
pub mod ctl;
pub mod monit;
pub mod probe;

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Fatal, os_phrase};
use crate::exit;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, State, Status};

/// How long a live container-run may take to answer a datagram before it is
/// reported as not answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// While waiting for a state, a STATUS is re-sent this often in case a
/// notification was lost (the supervisor never blocks to deliver one).
const RESEND_EVERY: Duration = Duration::from_millis(500);

/// Parse one mode's command line under the name the user typed
/// (`container-run`, `container-run ctl`, `bpm`), so that usage lines say
/// it. `--help` and `--version` come back as `Fatal::Shown` (main prints
/// them and exits 0); every other clap error becomes one usage line.
pub fn parse<T: clap::Parser>(args: Vec<OsString>, bin_name: &str) -> Result<T, Fatal> {
    let mut cmd = env_values_only_when_set(T::command()).bin_name(bin_name.to_string());
    let matches = cmd
        .try_get_matches_from_mut(args)
        .map_err(|e| usage_error(&e, bin_name))?;
    T::from_arg_matches(&matches).map_err(|e| usage_error(&e, bin_name))
}

/// `[env: NAME=VALUE]` in the help when NAME is set; `[env: NAME]` when it
/// is not, rather than clap's `[env: NAME=]`, which reads as "set to empty".
fn env_values_only_when_set(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let unset = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_none());
        if unset {
            arg.hide_env_values(true)
        } else {
            arg
        }
    })
}

/// A clap error as what main prints: help and version as text for stdout,
/// anything else as one line naming what is wrong.
pub fn usage_error(e: &clap::Error, bin_name: &str) -> Fatal {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Fatal::Shown(e.to_string()),
        _ => Fatal::Usage(format!("{} (see {bin_name} --help)", clap_message(e))),
    }
}

/// clap's error kind and context rendered into one line; clap's own
/// rendering spreads the names of missing arguments and the valid values
/// over several lines.
fn clap_message(e: &clap::Error) -> String {
    let strings = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        Some(ContextValue::StyledStr(s)) => vec![s.to_string()],
        Some(ContextValue::StyledStrs(v)) => v.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    };
    let one = |kind| strings(kind).join(", ");
    let arg = one(ContextKind::InvalidArg);
    let value = one(ContextKind::InvalidValue);
    match e.kind() {
        ErrorKind::MissingRequiredArgument => {
            let missing = strings(ContextKind::InvalidArg);
            let s = if missing.len() == 1 { "" } else { "s" };
            format!("missing required argument{s}: {}", missing.join(", "))
        }
        ErrorKind::InvalidValue => {
            let valid = strings(ContextKind::ValidValue);
            if valid.is_empty() {
                format!("invalid value '{value}' for {arg}")
            } else {
                format!(
                    "invalid value '{value}' for {arg}: expected one of {}",
                    valid.join(", ")
                )
            }
        }
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map_or(String::new(), |s| format!(": {s}"));
            format!("invalid value '{value}' for {arg}{why}")
        }
        ErrorKind::UnknownArgument => format!("unexpected argument '{arg}'"),
        ErrorKind::ArgumentConflict => {
            let prior = one(ContextKind::PriorArg);
            if prior.is_empty() {
                format!("{arg} cannot be used here")
            } else {
                format!("{arg} cannot be used with {prior}")
            }
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    }
}

/// `help` as the first word of a mode prints its help, as `--help` does.
pub fn help_word_to_flag(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_some_and(|a| a == "help") {
        args.truncate(1);
        args.push("--help".into());
    }
    args
}

/// One container-run to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `JOB/PROCESS` when known, else the socket path.
    pub label: String,
    pub socket: PathBuf,
    /// Every file of that job process, when it was named (not `--socket`).
    pub paths: Option<Paths>,
}

impl Target {
    pub fn named(base: &Path, job: &str, process: Option<&str>) -> Result<Target, Fatal> {
        let paths = Paths::new(&crate::cli::absolute(base)?, job, process.unwrap_or(job))?;
        Ok(Target {
            label: format!("{}/{}", paths.job, paths.process),
            socket: paths.socket.clone(),
            paths: Some(paths),
        })
    }

    pub fn at_socket(path: &Path) -> Target {
        Target {
            label: path.display().to_string(),
            socket: path.to_path_buf(),
            paths: None,
        }
    }

    /// Given by `--socket`: the label is the path, so messages do not
    /// repeat it, and hints about jobs and processes do not apply.
    pub fn is_at_socket(&self) -> bool {
        self.label == self.socket.display().to_string()
    }
}

/// Where `--all` looks: `BASE/data`.
pub fn data_dir(base: &Path) -> Result<PathBuf, Fatal> {
    Ok(crate::cli::absolute(base)?.join("data"))
}

/// Every `*_containerrun.sock` under `BASE/data/*/`, sorted. A missing
/// `BASE/data` is no error of the caller's: nothing runs there (exit 3).
pub fn all_targets(base: &Path) -> Result<Vec<Target>, Fatal> {
    let data = data_dir(base)?;
    let base = data.parent().unwrap_or(&data);
    let mut targets: Vec<Target> = crate::paths::pod_sockets(base)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Fatal::NoAnswer(format!(
                "no container-run socket under {}: no such directory",
                data.display()
            )),
            _ => Fatal::Setup(format!("cannot list {}: {}", data.display(), os_phrase(&e))),
        })?
        .into_iter()
        .map(|paths| Target {
            label: format!("{}/{}", paths.job, paths.process),
            socket: paths.socket.clone(),
            paths: Some(paths),
        })
        .collect();
    targets.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(targets)
}

/// Every container-run of the pod (`all_targets`), none when `BASE/data`
/// does not exist yet: `monit summary` and `bpm list` then show an empty pod
/// rather than an error.
pub fn pod_targets(base: &Path) -> Result<Vec<Target>, Fatal> {
    let data = crate::cli::absolute(base)?.join("data");
    match std::fs::symlink_metadata(&data) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => all_targets(base),
    }
}

/// `BASE/<link>` -> `BASE`: a compatibility command invoked through the link
/// container-run installs (`jobs/bpm/bin/bpm`, `bosh/bin/monit`) works under
/// any base directory without configuration. A relative invocation from
/// inside BASE gives `.`.
pub fn base_from_link(invoked: &Path, link: &str) -> Option<PathBuf> {
    let mut base = invoked;
    for want in Path::new(link).components().rev() {
        if base.file_name()? != want.as_os_str() {
            return None;
        }
        base = base.parent()?;
    }
    Some(if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.to_path_buf()
    })
}

/// Go's `text/tabwriter` as bpm configures it (and `ctl status` with padding 2) (minwidth 0, tabwidth 0,
/// padchar ' ', no flags) for rows of equal length: every cell but the last
/// of a row is padded to its column's widest cell plus `padding`; the last
/// cell is written as it is. Widths count characters, as Go counts runes.
pub fn tabwrite<R: AsRef<[String]>>(rows: &[R], padding: usize) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns.saturating_sub(1))
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count() + padding)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let row = row.as_ref();
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// What usage lines call a mode: `bpm` when the binary is invoked as bpm
/// (or `monit` as monit), `container-run bpm` otherwise.
pub fn mode_bin_name(mode: &str) -> String {
    match crate::error::program() {
        p if p == mode => mode.to_string(),
        other => format!("{other} {mode}"),
    }
}

/// `--base-dir` of the compatibility commands (`bpm`, `monit`): without it
/// (and without `CONTAINER_RUN_BASE_DIR`), BASE comes from the path of the
/// link they were invoked through, else `/var/vcap`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkedBaseDir {
    /// Root of the sockets [default: from the path invoked when it is
    /// BASE/jobs/bpm/bin/bpm or BASE/bosh/bin/monit, else /var/vcap].
    #[arg(
        long = "base-dir",
        value_name = "DIR",
        env = "CONTAINER_RUN_BASE_DIR",
        global = true
    )]
    pub base_dir: Option<PathBuf>,
}

impl LinkedBaseDir {
    pub fn resolve(&self, invoked: &Path, link: &str) -> PathBuf {
        self.base_dir
            .clone()
            .or_else(|| base_from_link(invoked, link))
            .unwrap_or_else(|| PathBuf::from("/var/vcap"))
    }
}

/// The job's main process is alive: running, draining, or stopping before
/// it has exited. What `monit` and `bpm list` call running.
pub fn main_process_lives(s: &Status) -> bool {
    s.state.is_up() || (s.state == State::Stopping && s.pid.is_some())
}

/// What a command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Any reply: the command was received.
    Ack,
    /// The state, with no start pending.
    Reach(State),
    /// Running again after a stop: more starts than the first reply showed.
    Restarted,
}

/// How one target ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Status),
    /// The command was received (a reply came back: the last one is here),
    /// but the state asked for was not reached in time.
    TimedOut(Option<Status>),
    NoAnswer(String),
    Failed(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Done(_) => exit::OK,
            Outcome::TimedOut(_) | Outcome::Failed(_) => exit::FAILURE,
            Outcome::NoAnswer(_) => exit::NO_ANSWER,
        }
    }
}

/// The worst exit code of several outcomes: no answer (3) over failure (1).
pub fn combined_exit(outcomes: &[Outcome]) -> u8 {
    outcomes.iter().map(Outcome::exit_code).max().unwrap_or(0)
}

/// What a waiting client knows of one target, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub target: &'a Target,
    /// The last reply, if any came.
    pub last: Option<&'a Status>,
    /// The target has an outcome: nothing more to wait for.
    pub done: bool,
}

struct Session {
    sock: Option<UnixDatagram>,
    goal: Goal,
    first: Option<Status>,
    last: Option<Status>,
    sent_at: Instant,
    outcome: Option<Outcome>,
}

impl Session {
    fn open(target: &Target, commands: &[ControlCommand], goal: Goal) -> Session {
        let mut s = Session {
            sock: None,
            goal,
            first: None,
            last: None,
            sent_at: Instant::now(),
            outcome: None,
        };
        match connect(target) {
            Ok(sock) => {
                for cmd in commands {
                    if let Err(e) = sock.send(cmd.as_str().as_bytes()) {
                        s.outcome = Some(send_error(target, &e));
                        return s;
                    }
                }
                s.sock = Some(sock);
            }
            Err(outcome) => s.outcome = Some(outcome),
        }
        s
    }

    fn on_reply(&mut self, status: Status) {
        if self.first.is_none() {
            self.first = Some(status.clone());
        }
        // A START that container-run ignored because it is shutting down
        // (a drain, a SIGTERM, a crash) will never be reached: say so now.
        if matches!(self.goal, Goal::Reach(State::Running) | Goal::Restarted) && status.exiting {
            self.outcome = Some(Outcome::Failed(format!(
                "START ignored: container-run is shutting down ({})",
                status.state.as_str()
            )));
            self.last = Some(status);
            return;
        }
        let reached = match self.goal {
            Goal::Ack => true,
            Goal::Reach(state) => {
                (status.state == state && !status.pending_start)
                    || (state == State::Stopped && job_gone_drain_finishing(&status))
            }
            Goal::Restarted => {
                status.state.is_up()
                    && !status.pending_start
                    && self
                        .first
                        .as_ref()
                        .is_some_and(|f| status.starts > f.starts)
            }
        };
        if reached {
            self.outcome = Some(Outcome::Done(status.clone()));
        }
        self.last = Some(status);
    }
}

/// The job's process is gone and what is left is a drain script that
/// container-run lets finish (a TERM during the drain, SPEC section 8): a
/// drain script's own `bpm stop JOB` must not wait for itself to end.
fn job_gone_drain_finishing(s: &Status) -> bool {
    s.state == State::Stopping && s.pid.is_none() && s.drain == crate::protocol::Drain::Running
}

/// A reply address of our own (see `protocol::reply_socket`), connected to
/// the target so only its datagrams reach us. The error is an `Outcome`,
/// large but built at most once per target.
#[allow(clippy::result_large_err)]
fn connect(target: &Target) -> Result<UnixDatagram, Outcome> {
    let sock = crate::protocol::reply_socket()
        .map_err(|e| Outcome::Failed(format!("cannot bind a reply address: {}", os_phrase(&e))))?;
    sock.connect(&target.socket)
        .map_err(|e| send_error(target, &e))?;
    // Never block on a send: a socket that nobody reads (a hung or stopped
    // container-run) fills its queue, and a blocking send would then wait
    // past every deadline.
    sock.set_nonblocking(true).map_err(|e| {
        Outcome::Failed(format!(
            "cannot make the socket non-blocking: {}",
            os_phrase(&e)
        ))
    })?;
    Ok(sock)
}

/// What is at a path that should be a socket, when it is something else.
fn not_a_socket(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_socket() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_file() {
        Some("a regular file")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else {
        Some("not a socket")
    }
}

/// Why a target cannot be reached, in words that fit how it was named: by
/// JOB/PROCESS the socket's path helps; by `--socket` the label is the path.
fn send_error(target: &Target, e: &io::Error) -> Outcome {
    let by_path = target.is_at_socket();
    let s = target.socket.display();
    if let Some(what) = not_a_socket(&target.socket) {
        return Outcome::NoAnswer(if by_path {
            format!("not a socket: {what}")
        } else {
            format!("not a socket: {s} is {what}")
        });
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) if by_path => Outcome::NoAnswer("no such file".into()),
        Some(libc::ENOENT) => Outcome::NoAnswer(format!(
            "no socket at {s}: is container-run running with this job and process?"
        )),
        Some(libc::ECONNREFUSED) if by_path => Outcome::NoAnswer(
            "nothing listens: a stale socket file, container-run is not running".into(),
        ),
        Some(libc::ECONNREFUSED) => Outcome::NoAnswer(format!(
            "nothing listens on {s}: a stale socket file, container-run is not running"
        )),
        Some(libc::EAGAIN) if by_path => Outcome::NoAnswer(
            "nobody reads it: its queue is full (container-run hangs or is stopped)".into(),
        ),
        Some(libc::EAGAIN) => Outcome::NoAnswer(format!(
            "nobody reads {s}: its queue is full (container-run hangs or is stopped)"
        )),
        Some(libc::EACCES) | Some(libc::EPERM) if by_path => {
            Outcome::Failed("permission denied: run as the socket's owner or group".into())
        }
        Some(libc::EACCES) | Some(libc::EPERM) => Outcome::Failed(format!(
            "permission denied on {s}: run as the socket's owner or group"
        )),
        _ if by_path => Outcome::Failed(format!("cannot send: {}", os_phrase(e))),
        _ => Outcome::Failed(format!("cannot send to {s}: {}", os_phrase(e))),
    }
}

/// Send `commands` (in order) to every target and wait, on all at once,
/// until each reaches `goal` or `timeout` passes.
pub fn drive(
    targets: &[Target],
    commands: &[ControlCommand],
    goal: Goal,
    timeout: Duration,
) -> Vec<Outcome> {
    drive_with_progress(targets, commands, goal, timeout, &mut |_, _| {})
}

/// `drive`, calling `progress` with the time waited and what is known of
/// every target after each turn of the loop while something is awaited (at
/// least every `RESEND_EVERY`).
///
/// A first reply is awaited for `ANSWER_TIMEOUT` whatever `timeout` says:
/// a container-run that answered has received the command, and a wait that
/// then runs out is a timeout (exit 1), never "no answer" (exit 3).
pub fn drive_with_progress(
    targets: &[Target],
    commands: &[ControlCommand],
    goal: Goal,
    timeout: Duration,
    progress: &mut dyn FnMut(Duration, &[Seen]),
) -> Vec<Outcome> {
    let start = Instant::now();
    // A timeout too long for the clock is a wait without end, not a panic.
    let deadline = start + timeout.min(crate::cli::MAX_DURATION);
    let answer_deadline = start + ANSWER_TIMEOUT;
    let mut sessions: Vec<Session> = targets
        .iter()
        .map(|t| Session::open(t, commands, goal))
        .collect();
    let mut buf = vec![0u8; crate::protocol::MAX_DATAGRAM];
    // Bounded: every turn either waits until the next resend or deadline, or
    // consumes a reply.
    loop {
        let now = Instant::now();
        for (s, target) in sessions
            .iter_mut()
            .zip(targets)
            .filter(|(s, _)| s.outcome.is_none())
        {
            if s.last.is_none() {
                if now >= answer_deadline {
                    s.outcome = Some(Outcome::NoAnswer(no_answer(target)));
                }
            } else if now >= deadline {
                s.outcome = Some(Outcome::TimedOut(s.last.clone()));
            }
            if s.outcome.is_none()
                && now.duration_since(s.sent_at) >= RESEND_EVERY
                && let Some(sock) = &s.sock
            {
                match sock.send(ControlCommand::Status.as_str().as_bytes()) {
                    // Its queue is full for now: the next resend tries again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => s.outcome = Some(went_away(s.last.as_ref())),
                    Ok(_) => {}
                }
                s.sent_at = now;
            }
        }
        let seen: Vec<Seen> = sessions
            .iter()
            .zip(targets)
            .map(|(s, target)| Seen {
                target,
                last: s.last.as_ref(),
                done: s.outcome.is_some(),
            })
            .collect();
        if seen.iter().any(|s| !s.done) {
            progress(now.duration_since(start), &seen);
        }
        let open: Vec<usize> = (0..sessions.len())
            .filter(|&i| sessions[i].outcome.is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let wake = open
            .iter()
            .map(|&i| {
                let s = &sessions[i];
                let resend = s.sent_at + RESEND_EVERY;
                let limit = if s.last.is_none() {
                    answer_deadline
                } else {
                    deadline
                };
                resend.min(limit)
            })
            .min()
            .unwrap_or(deadline);
        let wait = wake.saturating_duration_since(Instant::now());
        let ms = u32::try_from(wait.as_millis() + 1).unwrap_or(u32::MAX);
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|&i| {
                    let sock = sessions[i]
                        .sock
                        .as_ref()
                        .expect("open sessions have a socket");
                    PollFd::new(sock.as_fd(), PollFlags::POLLIN)
                })
                .collect();
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            open.iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(&i, _)| i)
                .collect()
        };
        for i in ready {
            let s = &mut sessions[i];
            let Some(sock) = s.sock.take() else { continue };
            while s.outcome.is_none() {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(status) = Status::from_line(&buf[..n]) {
                            s.on_reply(status);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        s.outcome = Some(went_away(s.last.as_ref()));
                    }
                    Err(e) => {
                        s.outcome = Some(Outcome::Failed(format!("receiving: {}", os_phrase(&e))))
                    }
                }
            }
            s.sock = Some(sock);
        }
    }
    sessions
        .into_iter()
        .map(|s| s.outcome.expect("every session ends with an outcome"))
        .collect()
}

/// The socket stopped answering. Before any reply: nobody is there (3).
/// After one: the command was received, and then container-run went (it
/// exits after a crash or a SIGTERM); a failure (1), never "no answer".
fn went_away(last: Option<&Status>) -> Outcome {
    match last {
        None => Outcome::NoAnswer("container-run went away from its socket".into()),
        Some(s) => Outcome::Failed(format!(
            "container-run went away from its socket after answering (last seen {})",
            s.state.as_str()
        )),
    }
}

fn no_answer(target: &Target) -> String {
    let within = format_duration(ANSWER_TIMEOUT);
    if target.is_at_socket() {
        format!("no answer within {within}")
    } else {
        format!("no answer within {within} on {}", target.socket.display())
    }
}

/// One target, one command, the status it answers with.
pub fn query(target: &Target) -> Outcome {
    drive(
        std::slice::from_ref(target),
        &[ControlCommand::Status],
        Goal::Ack,
        ANSWER_TIMEOUT,
    )
    .remove(0)
}

/// A duration as an operator writes it: `0s`, `200ms`, `30s`, `1m30s`, `2h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            // Integer arithmetic: float formatting would cost the static
            // binary several kilobytes for one digit.
            format!("{}.{}s", ms / 1000, ms % 1000 / 100)
        };
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[derive(Debug, clap::Parser)]
    struct Demo {
        #[arg(value_enum)]
        verb: crate::client::ctl::Verb,
        #[arg(long = "job-name", value_name = "JOB")]
        job: String,
        #[arg(long, value_parser = crate::cli::parse_duration)]
        timeout: Option<Duration>,
    }

    fn message(args: &[&str]) -> String {
        let args = args.iter().map(OsString::from).collect();
        match parse::<Demo>(args, "demo") {
            Err(Fatal::Usage(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clap_errors_become_one_line_naming_what_is_wrong() {
        assert_eq!(
            message(&["demo", "stop"]),
            "missing required argument: --job-name <JOB> (see demo --help)"
        );
        assert_eq!(
            message(&["demo"]),
            "missing required arguments: --job-name <JOB>, <VERB> (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stat", "--job-name", "j"]),
            "invalid value 'stat' for <VERB>: expected one of start, stop, term, quit, status, restart \
             (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stop", "--job-name", "j", "--timeout", "5x"]),
            "invalid value '5x' for --timeout <TIMEOUT>: invalid unit \"x\" in duration \"5x\" \
             (use ms, s, m or h) (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stop", "--job-name", "j", "--bogus"]),
            "unexpected argument '--bogus' (see demo --help)"
        );
        let help = parse::<Demo>(vec!["demo".into(), "--help".into()], "demo x");
        match help {
            Err(Fatal::Shown(text)) => assert!(text.contains("Usage: demo x"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
