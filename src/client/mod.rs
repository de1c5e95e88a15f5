//! The operator's side of the control socket (SPEC sections 6 and 10):
//! `ctl`, `bpm`, `monit` and `probe` share one way to reach container-runs,
//! send a command to each, and wait, on all of them at once, until each has
//! reached the state asked for. No threads: one `poll` over one socket per
//! target.

pub mod bpm;
pub mod ctl;
pub mod monit;
pub mod probe;

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::Fatal;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, State, Status};

/// Exit code when no container-run answers at a socket.
pub const NO_ANSWER: u8 = 3;

/// How long a live container-run may take to answer a datagram before it is
/// reported as not answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// While waiting for a state, a STATUS is re-sent this often in case a
/// notification was lost (the supervisor never blocks to deliver one).
const RESEND_EVERY: Duration = Duration::from_millis(500);

/// Turn a clap result into a value, printing help or version and exiting 0
/// for `--help`/`--version`, and a one-line usage error (exit 2) otherwise.
pub fn parse_or_exit<T>(parsed: Result<T, clap::Error>) -> Result<T, Fatal> {
    match parsed {
        Ok(v) => Ok(v),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            Err(Fatal::Usage(format!("{first} (see --help)")))
        }
    }
}

/// One container-run to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `JOB/PROCESS` when known, else the socket path.
    pub label: String,
    pub socket: PathBuf,
}

impl Target {
    pub fn named(base: &Path, job: &str, process: Option<&str>) -> Result<Target, Fatal> {
        let job = crate::cli::validate_name("job", job)?;
        let process = match process {
            Some(p) => crate::cli::validate_name("process", p)?,
            None => job.clone(),
        };
        let paths = Paths::new(&crate::cli::absolute(base)?, &job, &process)?;
        Ok(Target {
            label: format!("{job}/{process}"),
            socket: paths.socket,
        })
    }

    pub fn at_socket(path: &Path) -> Target {
        Target {
            label: path.display().to_string(),
            socket: path.to_path_buf(),
        }
    }

    pub fn paths(&self) -> Option<Paths> {
        let (job, process) = self.label.split_once('/')?;
        let base = self.socket.parent()?.parent()?.parent()?;
        Paths::new(base, job, process).ok()
    }
}

/// Every `*_containerrun.sock` under `BASE/data/*/`, sorted.
pub fn all_targets(base: &Path) -> Result<Vec<Target>, Fatal> {
    let data = crate::cli::absolute(base)?.join("data");
    let jobs = std::fs::read_dir(&data)
        .map_err(|e| Fatal::setup(format!("cannot list {}", data.display()), e))?;
    let mut targets = Vec::new();
    for job in jobs.flatten() {
        let Ok(files) = std::fs::read_dir(job.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let Some(process) = name
                .to_str()
                .and_then(|n| n.strip_suffix("_containerrun.sock"))
            else {
                continue;
            };
            targets.push(Target {
                label: format!("{}/{process}", job.file_name().to_string_lossy()),
                socket: f.path(),
            });
        }
    }
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
    TimedOut(Option<Status>),
    NoAnswer(String),
    Failed(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Done(_) => 0,
            Outcome::TimedOut(_) | Outcome::Failed(_) => 1,
            Outcome::NoAnswer(_) => NO_ANSWER,
        }
    }
}

/// The worst exit code of several outcomes: no answer (3) over failure (1).
pub fn combined_exit(outcomes: &[Outcome]) -> u8 {
    outcomes.iter().map(Outcome::exit_code).max().unwrap_or(0)
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
        match connect(&target.socket) {
            Ok(sock) => {
                for cmd in commands {
                    if let Err(e) = sock.send(cmd.as_str().as_bytes()) {
                        s.outcome = Some(send_error(&target.socket, &e));
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
        let reached = match self.goal {
            Goal::Ack => true,
            Goal::Reach(state) => status.state == state && !status.pending_start,
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

/// Bind a reply address of our own (abstract: nothing to clean up, and the
/// supervisor needs no permission on a file of ours to answer), then connect
/// to the target so only its datagrams reach us.
fn connect(socket: &Path) -> Result<UnixDatagram, Outcome> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "container-run-client-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| Outcome::Failed(format!("cannot make a reply address: {e}")))?;
    let sock = UnixDatagram::bind_addr(&addr)
        .map_err(|e| Outcome::Failed(format!("cannot bind a reply address: {e}")))?;
    sock.connect(socket).map_err(|e| send_error(socket, &e))?;
    // Never block on a send: a socket that nobody reads (a hung or stopped
    // container-run) fills its queue, and a blocking send would then wait
    // past every deadline.
    sock.set_nonblocking(true)
        .map_err(|e| Outcome::Failed(format!("cannot make the socket non-blocking: {e}")))?;
    Ok(sock)
}

fn send_error(socket: &Path, e: &io::Error) -> Outcome {
    let s = socket.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Outcome::NoAnswer(format!(
            "no socket at {s}: is container-run running with this job and process?"
        )),
        Some(libc::ECONNREFUSED) => Outcome::NoAnswer(format!(
            "nothing listens on {s}: a stale socket file, container-run is not running"
        )),
        Some(libc::ENOTSOCK) => Outcome::NoAnswer(format!("{s} is not a socket")),
        Some(libc::EAGAIN) => Outcome::NoAnswer(format!(
            "nobody reads {s}: its queue is full (container-run hangs or is stopped)"
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => Outcome::Failed(format!(
            "permission denied on {s}: run as the socket's owner or group"
        )),
        _ => Outcome::Failed(format!("cannot send to {s}: {e}")),
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
    let start = Instant::now();
    let deadline = start + timeout;
    let answer_deadline = start + ANSWER_TIMEOUT.min(timeout);
    let mut sessions: Vec<Session> = targets
        .iter()
        .map(|t| Session::open(t, commands, goal))
        .collect();
    let mut buf = vec![0u8; 4096];
    // Bounded: every turn either waits until the next resend or deadline, or
    // consumes a reply.
    loop {
        let now = Instant::now();
        for s in sessions.iter_mut().filter(|s| s.outcome.is_none()) {
            if s.last.is_none() && now >= answer_deadline {
                s.outcome = Some(Outcome::NoAnswer(
                    "no answer from container-run on its socket".into(),
                ));
            } else if now >= deadline {
                s.outcome = Some(Outcome::TimedOut(s.last.clone()));
            } else if now.duration_since(s.sent_at) >= RESEND_EVERY
                && let Some(sock) = &s.sock
            {
                match sock.send(ControlCommand::Status.as_str().as_bytes()) {
                    // Its queue is full for now: the next resend tries again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        s.outcome = Some(Outcome::NoAnswer(
                            "container-run went away from its socket".into(),
                        ));
                    }
                    Ok(_) => {}
                }
                s.sent_at = now;
            }
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
            sock.set_nonblocking(true).ok();
            while s.outcome.is_none() {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(status) = Status::from_line(&buf[..n]) {
                            s.on_reply(status);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        s.outcome = Some(Outcome::NoAnswer(
                            "container-run went away from its socket".into(),
                        ));
                    }
                    Err(e) => s.outcome = Some(Outcome::Failed(format!("receiving: {e}"))),
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
