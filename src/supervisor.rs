//! The one event loop (SPEC sections 3-5 and 8): a signalfd, the control
//! socket, the socket directory's inotify watch, the drain script's stdout
//! and a round of STATUS to the pod's peers while one is out, and the
//! earliest deadline, waited on with one `ppoll`. It turns what happens into
//! `Event`s for the machine and carries out the `Action`s that come back.
//! Single threaded; with nothing due it sleeps without timeout.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

use crate::cli::RunConfig;
use crate::datagram::Peer;
use crate::drain;
use crate::error::{Fatal, os_phrase};
use crate::exit;
use crate::machine::{Action, Child, DrainPlan, Event, Machine, MachineConfig, PostStartPlan};
use crate::peers::Barrier;
use crate::protocol::{ControlCommand, State, Status};
use crate::socket::{ControlSocket, Incoming};
use crate::state_files;
use crate::tree::{self, Inherited, Output, SpawnSpec};

/// Signals container-run reads from its signalfd; they stay blocked in
/// container-run itself, and are unblocked in every child before exec.
const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Datagrams read in one turn of the loop before signals and deadlines get
/// their turn again, so that a flood cannot starve them.
const DATAGRAMS_PER_TURN: usize = 1024;

/// Senders waiting for a stop or start to settle; bounded so that a flood
/// of commands cannot grow memory.
const MAX_WAITERS: usize = 64;

pub struct Supervisor {
    cfg: RunConfig,
    machine: Machine,
    signals: SignalFd,
    socket: ControlSocket,
    waiters: Vec<Peer>,
    born: Instant,
    inherited: Inherited,
    /// The drain script's stdout while it is open, and what it said so far.
    drain_out: Option<(std::fs::File, Vec<u8>)>,
    barrier: Barrier,
    /// The first SIGTERM or SIGINT: peers that may be about to drain are
    /// waited for while it is recent (SPEC section 8).
    signalled: Option<Instant>,
    hold_warned: crate::logger::Limited,
}

/// Set up everything fallible (signals, directories, socket) before the job
/// is started: an error here leaves nothing running and nothing bound.
pub fn run(cfg: RunConfig) -> Result<u8, Fatal> {
    // A command that does not exist at all fails before anything is
    // created; one that exists but cannot be executed fails at spawn (126).
    if find_program(cfg.command.program()).is_none() {
        return Err(Fatal::Exec {
            code: exit::NOT_FOUND,
            message: format!(
                "{}: command not found",
                cfg.command.program().to_string_lossy()
            ),
        });
    }
    let mut mask = SigSet::empty();
    for sig in HANDLED {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|e| Fatal::setup("cannot block signals", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Fatal::setup("cannot create a signalfd", e))?;

    if std::process::id() == 1 {
        log::debug!("running as PID 1: reaping every orphan of the container");
    } else {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Fatal::setup("cannot become a child subreaper", e))?;
        log::debug!("child subreaper: orphans of the job are re-parented here");
    }

    let inherited = tree::inherited_dispositions();
    let paths = &cfg.paths;
    state_files::prepare_dirs(paths).map_err(|e| {
        Fatal::setup(
            format!("cannot write under base directory {}", paths.base.display()),
            e,
        )
    })?;
    let pod = crate::rendezvous::pod_of(&paths.base).map_err(|e| {
        Fatal::setup(
            format!("cannot read {}", paths.base.join("data").display()),
            e,
        )
    })?;
    let socket = ControlSocket::bind(paths, &pod, cfg.socket_mode, cfg.socket_group)?;
    let barrier = Barrier::new(
        pod,
        socket.rendezvous_name().to_vec(),
        crate::datagram::Trust::new(cfg.trust_uid),
    );
    // Left by a container-run that was killed: nothing runs now.
    if let Err(e) = state_files::remove_run_files(paths) {
        return Err(Fatal::setup("cannot remove stale run files", e));
    }
    state_files::install_links(paths);

    let hold = state_files::hold_in_force(paths);
    if hold {
        log::info!(
            "STOP marker {} found: staying stopped until `container-run ctl start {}{}`",
            paths.stopped.display(),
            cfg.paths.job,
            if cfg.paths.process == cfg.paths.job {
                String::new()
            } else {
                format!(" -p {}", cfg.paths.process)
            }
        );
    }
    let machine = Machine::new(machine_config(&cfg), hold);
    log::debug!(
        "control socket {}, rendezvous @{}",
        socket.path().display(),
        String::from_utf8_lossy(socket.rendezvous_name())
    );
    let mut sup = Supervisor {
        cfg,
        machine,
        signals,
        socket,
        waiters: Vec::new(),
        born: Instant::now(),
        inherited,
        drain_out: None,
        barrier,
        signalled: None,
        hold_warned: Default::default(),
    };
    if let Some(code) = sup.feed(Event::Boot) {
        return Ok(code);
    }
    Ok(sup.event_loop())
}

fn machine_config(cfg: &RunConfig) -> MachineConfig {
    let post_start = match (&cfg.post_start, &cfg.condition) {
        (None, _) => PostStartPlan::None,
        (Some(_), None) => PostStartPlan::Direct,
        (Some(_), Some(_)) => PostStartPlan::AfterCondition,
    };
    let drain = match (&cfg.drain, cfg.drain_timeout) {
        (_, t) if t.is_zero() => DrainPlan::Off,
        (Some(_), timeout) => DrainPlan::Script { timeout },
        (None, timeout) => DrainPlan::Barrier { timeout },
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

impl Supervisor {
    fn event_loop(&mut self) -> u8 {
        loop {
            crate::logger::flush_pending();
            let deadline = [
                self.machine.next_deadline(),
                self.barrier.deadline(),
                self.socket.deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = deadline
                .map(|d| TimeSpec::from_duration(d.saturating_duration_since(Instant::now())));
            let ready = {
                // Optional sources take the signalfd's place when absent,
                // so that the array keeps its shape; their readiness is
                // then ignored.
                let signals = self.signals.as_fd();
                let optional = [
                    self.socket.watch_fd(),
                    self.drain_out.as_ref().map(|(f, _)| f.as_fd()),
                    self.barrier.fd(),
                ];
                // Held log lines: wake when stderr takes more. Only the
                // wake-up matters; the lines go out at the loop's top.
                // SAFETY: fd 2 stays open for container-run's whole life.
                let stderr = unsafe { BorrowedFd::borrow_raw(2) };
                let mut fds = [
                    PollFd::new(signals, PollFlags::POLLIN),
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(optional[0].unwrap_or(signals), PollFlags::POLLIN),
                    PollFd::new(optional[1].unwrap_or(signals), PollFlags::POLLIN),
                    PollFd::new(optional[2].unwrap_or(signals), PollFlags::POLLIN),
                    PollFd::new(stderr, PollFlags::POLLOUT),
                ];
                let used = if crate::logger::pending() { 6 } else { 5 };
                match ppoll(&mut fds[..used], timeout, None) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => log::warn!("ppoll: {e}"),
                }
                let mut ready = [false; 5];
                for (i, fd) in fds[..5].iter().enumerate() {
                    let present = i < 2 || optional[i - 2].is_some();
                    ready[i] = present && fd.revents().is_some_and(|r| !r.is_empty());
                }
                ready
            };
            if ready[2] {
                self.socket.on_watch_event(Instant::now());
                // Whatever the events said (an overflow names nothing):
                // one look at the marker per wake-up.
                self.guard_hold();
            }
            self.socket.on_deadline(Instant::now());
            if let Some(code) = self.turn(ready) {
                self.notify_waiters();
                return code;
            }
            self.notify_waiters();
        }
    }

    /// One turn of the loop: every ready source, then due deadlines.
    /// `Some(code)` when container-run is to exit.
    fn turn(&mut self, ready: [bool; 5]) -> Option<u8> {
        if ready[0]
            && let Some(code) = self.handle_signals()
        {
            return Some(code);
        }
        if ready[1]
            && let Some(code) = self.handle_datagrams()
        {
            return Some(code);
        }
        if ready[3]
            && let Some(code) = self.read_drain_output()
        {
            return Some(code);
        }
        if self.barrier.deadline().is_some()
            && let Some(tally) = self.barrier.on_ready(Instant::now())
            && let Some(code) = self.feed(Event::PeersAnswered(tally))
        {
            return Some(code);
        }
        self.feed(Event::Tick)
    }

    /// Read every pending signal, then act: exits first (a job that has
    /// already crashed is not drained when SIGTERM arrives with its
    /// SIGCHLD), then the signals in the order they came.
    fn handle_signals(&mut self) -> Option<u8> {
        let mut child_exited = false;
        let mut events = Vec::new();
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match sig {
                        Signal::SIGCHLD => child_exited = true,
                        Signal::SIGTERM | Signal::SIGINT => {
                            log::info!("received {}", sig.as_str());
                            self.signalled.get_or_insert_with(Instant::now);
                            events.push(Event::Shutdown);
                        }
                        other => {
                            log::debug!("forwarding {}", other.as_str());
                            events.push(Event::Forward(other));
                        }
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("reading the signalfd: {}", os_phrase(&e.into()));
                    break;
                }
            }
        }
        if child_exited && let Some(code) = self.reap() {
            return Some(code);
        }
        for event in events {
            if let Some(code) = self.feed(event) {
                return Some(code);
            }
        }
        None
    }

    fn reap(&mut self) -> Option<u8> {
        let (reaped, children_left) = tree::reap_all();
        for r in reaped {
            log::debug!("reaped {} ({})", r.pid, r.exit);
            if let Some(code) = self.feed(Event::Reaped {
                pid: r.pid,
                exit: r.exit,
            }) {
                return Some(code);
            }
        }
        // A drain script that has exited has usually closed its stdout too:
        // its output is judged before the stop decides what is left.
        if self.drain_out.is_some()
            && let Some(code) = self.read_drain_output()
        {
            return Some(code);
        }
        self.feed(Event::Drained { children_left })
    }

    fn handle_datagrams(&mut self) -> Option<u8> {
        for _ in 0..DATAGRAMS_PER_TURN {
            let (command, sender) = match self.socket.recv() {
                Ok(Some(Incoming::Command(command, sender))) => (command, sender),
                Ok(Some(Incoming::Ignored)) => continue,
                Ok(None) => return None,
                Err(e) => {
                    log::warn!("reading the control socket: {}", os_phrase(&e));
                    return None;
                }
            };
            // Probes send STATUS every few seconds: keep those out of the log.
            if command == ControlCommand::Status {
                log::debug!("received STATUS");
            } else {
                log::info!("received {}", command.as_str());
            }
            let exit = self.feed(Event::Command(command));
            // Building the JSON line only for a sender that can be answered.
            if !sender.addr.is_unnamed() {
                self.socket.reply(&sender, &self.status().to_line());
            }
            let asks_for_change = matches!(
                command,
                ControlCommand::Start | ControlCommand::Stop | ControlCommand::Term
            );
            if asks_for_change && self.machine.state() == State::Stopping {
                self.add_waiter(sender);
            }
            if exit.is_some() {
                return exit;
            }
        }
        None
    }

    /// The STOP marker mirrors the hold while container-run runs (SPEC
    /// section 2): only START ends a hold, so a marker that someone else
    /// removed or replaced is written again, and one planted without a hold
    /// is removed.
    fn guard_hold(&mut self) {
        let hold = self.machine.snapshot(Instant::now()).hold;
        let paths = &self.cfg.paths;
        let shown = paths.stopped.display();
        let (what, result) = match (hold, state_files::hold_is_ours(paths)) {
            (true, Some(true)) | (false, None) => return,
            (true, _) => (
                format!(
                    "the STOP marker {shown} was removed or replaced while the hold is in force: writing it again"
                ),
                state_files::write_hold(paths),
            ),
            (false, Some(_)) => (
                format!("a STOP marker {shown} appeared without an operator's STOP: removing it"),
                state_files::remove_hold(paths),
            ),
        };
        // One line per 10 s with a count, whatever the job user repeats.
        if let Some(held) = self.hold_warned.due(Instant::now()) {
            let what = match result {
                Ok(()) => what,
                Err(e) => format!("{what}: {}", os_phrase(&e)),
            };
            log::warn!("{}", crate::logger::Limited::text(&what, held));
        }
    }

    /// Read what the drain script printed; at end of file, hand it to the
    /// machine. More than the contract allows is kept only as "too much".
    fn read_drain_output(&mut self) -> Option<u8> {
        let (file, buf) = self.drain_out.as_mut()?;
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let room = (drain::MAX_OUTPUT + 1).saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading the drain script's output: {}", os_phrase(&e));
                    break;
                }
            }
        }
        let (_, out) = self.drain_out.take()?;
        self.feed(Event::DrainOutput(out))
    }

    fn add_waiter(&mut self, sender: Peer) {
        if sender.addr.is_unnamed() || self.waiters.iter().any(|w| w.addr == sender.addr) {
            return;
        }
        if self.waiters.len() == MAX_WAITERS {
            self.waiters.remove(0);
        }
        self.waiters.push(sender);
    }

    /// Tell every sender of a STOP/START/TERM that is still waiting the state
    /// reached, once the machine has settled.
    fn notify_waiters(&mut self) {
        if self.waiters.is_empty() || self.machine.state() == State::Stopping {
            return;
        }
        let line = self.status().to_line();
        for w in self.waiters.drain(..) {
            self.socket.reply(&w, &line);
        }
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let snap = self.machine.snapshot(now);
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        Status {
            state: snap.state,
            pid: snap.pid,
            job: self.cfg.paths.job.clone(),
            process: self.cfg.paths.process.clone(),
            starts: snap.starts,
            hold: snap.hold,
            pending_start: snap.pending_start,
            exiting: snap.exiting,
            post_start: snap.post_start,
            uptime_ms: snap.uptime.map(ms),
            last_exit: snap.last_exit,
            drain: snap.drain,
            drain_left_ms: snap.drain_left.map(ms),
            stop_left_ms: snap.stop_left.map(ms),
            age_ms: ms(now.saturating_duration_since(self.born)),
        }
    }

    fn feed(&mut self, event: Event) -> Option<u8> {
        let actions = self.machine.step(Instant::now(), event);
        self.execute(actions)
    }

    /// Carry out actions in order; what an action reports (a spawn's pid, a
    /// file that could not be written) goes back to the machine at once,
    /// and the actions that returns join the queue.
    fn execute(&mut self, actions: Vec<Action>) -> Option<u8> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let follow_up = match action {
                Action::Spawn(child) => Some(self.spawn(child)),
                Action::Signal { group, signal } => {
                    tree::signal_group(group, signal);
                    None
                }
                Action::Terminate {
                    job,
                    helpers,
                    signal,
                    spare,
                } => {
                    tree::terminate(job, &helpers, signal, spare);
                    None
                }
                Action::KillTree { groups, spare } => {
                    tree::kill_tree(&groups, spare);
                    None
                }
                Action::AskPeers => self.ask_peers(),
                Action::WriteRunFiles(pid) => {
                    if let Err(e) = state_files::write_run_files(&self.cfg.paths, pid) {
                        log::error!("cannot write the sentinel or pidfile: {}", os_phrase(&e));
                    }
                    None
                }
                Action::RemoveRunFiles => {
                    if let Err(e) = state_files::remove_run_files(&self.cfg.paths) {
                        log::error!("cannot remove the sentinel or pidfile: {}", os_phrase(&e));
                    }
                    None
                }
                Action::WriteHold => match state_files::write_hold(&self.cfg.paths) {
                    Ok(()) => None,
                    Err(e) => {
                        log::error!(
                            "cannot write the STOP marker {}: {}",
                            self.cfg.paths.stopped.display(),
                            os_phrase(&e)
                        );
                        Some(Event::HoldNotWritten)
                    }
                },
                Action::RemoveHold => {
                    if let Err(e) = state_files::remove_hold(&self.cfg.paths) {
                        log::error!("cannot remove the STOP marker: {}", os_phrase(&e));
                    }
                    None
                }
                Action::Exit(code) => return Some(code),
            };
            if let Some(event) = follow_up {
                queue.extend(self.machine.step(Instant::now(), event));
            }
        }
        None
    }

    /// Start a round of STATUS to the pod's peers; with none to ask, the
    /// answer is known at once.
    fn ask_peers(&mut self) -> Option<Event> {
        let now = Instant::now();
        let settling = self
            .signalled
            .is_some_and(|t| now < t + crate::machine::SETTLE);
        self.barrier.ask(now, settling).map(Event::PeersAnswered)
    }

    fn spawn(&mut self, child: Child) -> Event {
        let cfg = &self.cfg;
        let (program, args, output): (&OsStr, Vec<&OsStr>, Output) = match child {
            Child::Main => (
                cfg.command.program(),
                cfg.command.args().iter().map(|a| a.as_os_str()).collect(),
                Output::Inherit,
            ),
            Child::Condition | Child::PostStart => {
                let hook = match child {
                    Child::Condition => cfg.condition.as_ref(),
                    _ => cfg.post_start.as_ref(),
                };
                let Some(hook) = hook else {
                    return Event::Missing(child);
                };
                let output = if child == Child::Condition {
                    Output::Discard
                } else {
                    Output::Inherit
                };
                (
                    hook.program.as_os_str(),
                    hook.args.iter().map(|a| a.as_os_str()).collect(),
                    output,
                )
            }
            Child::Drain(call) => {
                let Some(program) = cfg.drain.as_ref() else {
                    return Event::Missing(child);
                };
                (
                    program.as_os_str(),
                    call.args().into_iter().map(OsStr::new).collect(),
                    Output::Capture,
                )
            }
        };
        // The post-start and the drain are looked up when they are due;
        // a missing one is skipped (SPEC sections 5 and 8).
        if matches!(child, Child::PostStart | Child::Drain(_)) && find_program(program).is_none() {
            log::info!(
                "{} {} not found: skipped",
                what(child),
                program.to_string_lossy()
            );
            return Event::Missing(child);
        }
        let drain_env = [drain::JOB_STATE];
        let is_drain = matches!(child, Child::Drain(_));
        let spec = SpawnSpec {
            program,
            args,
            output,
            env_add: if is_drain { &drain_env } else { &[] },
            env_remove: if is_drain {
                &[drain::NO_NEXT_STATE]
            } else {
                &[]
            },
        };
        match tree::spawn(&spec, &self.inherited) {
            Ok(spawned) => {
                match child {
                    Child::Main => log::info!(
                        "running {} as pid {} (job {}, process {})",
                        program.to_string_lossy(),
                        spawned.pid,
                        cfg.paths.job,
                        cfg.paths.process
                    ),
                    Child::Condition => {
                        log::debug!("post-start condition runs as pid {}", spawned.pid)
                    }
                    _ => log::info!(
                        "running {} {} as pid {}",
                        what(child),
                        program.to_string_lossy(),
                        spawned.pid
                    ),
                }
                if let Some(fd) = spawned.stdout {
                    self.drain_out = Some((nonblocking(fd), Vec::new()));
                }
                Event::Spawned(child, spawned.pid)
            }
            Err(e) => {
                // The job's own command gets the one-line style of every
                // fatal error (`container-run: /etc/passwd: permission
                // denied`), as it ends container-run with 126 or 127.
                if child == Child::Main {
                    log::info!("{}", e.message);
                } else {
                    log::error!("{}: {}", what(child), e.message);
                }
                Event::SpawnFailed(child, e.code)
            }
        }
    }
}

fn what(child: Child) -> &'static str {
    match child {
        Child::Main => "job",
        Child::Condition => "post-start condition",
        Child::PostStart => "post-start",
        Child::Drain(_) => "drain",
    }
}

fn nonblocking(fd: OwnedFd) -> std::fs::File {
    let file = std::fs::File::from(fd);
    if let Err(e) = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        log::warn!("cannot make the drain's output non-blocking: {e}");
    }
    file
}

/// A command "exists as a path or on PATH" (the post-start, the drain, the
/// job).
fn find_program(program: &OsStr) -> Option<PathBuf> {
    let p = std::path::Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
