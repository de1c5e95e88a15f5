//! The one event loop (SPEC sections 3-5): a signalfd, the control socket,
//! the socket directory's inotify watch and the machine's next deadline,
//! waited on with one `ppoll`. It turns what
//! happens into `Event`s for the machine and carries out the `Action`s that
//! come back. Single threaded; with nothing due it sleeps without timeout.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

use crate::cli::RunConfig;
use crate::error::Fatal;
use crate::machine::{Action, Event, HookKind, Machine, MachineConfig, Pid, Scope};
use crate::protocol::{ControlCommand, State, Status};
use crate::socket::ControlSocket;
use crate::state_files;
use crate::tree::{self, Output};

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
    waiters: Vec<SocketAddr>,
    born: Instant,
}

/// Set up everything fallible (signals, directories, socket) before the job
/// is started: an error here leaves nothing running and nothing bound.
pub fn run(cfg: RunConfig) -> Result<u8, Fatal> {
    // A command that does not exist at all fails before anything is
    // created; one that exists but cannot be executed fails at spawn (126).
    if find_program(&cfg.command[0]).is_none() {
        return Err(Fatal::Exec {
            code: 127,
            message: format!("{}: command not found", cfg.command[0].to_string_lossy()),
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

    tree::record_inherited_dispositions();
    let paths = &cfg.paths;
    state_files::prepare_dirs(paths).map_err(|e| {
        Fatal::setup(
            format!("cannot write under base directory {}", paths.base.display()),
            e,
        )
    })?;
    let socket = ControlSocket::bind(&paths.socket, cfg.socket_mode, cfg.socket_group)?;
    // Left by a container-run that was killed: nothing runs now.
    if let Err(e) = state_files::remove_run_files(paths) {
        return Err(Fatal::setup("cannot remove stale run files", e));
    }
    state_files::install_links(paths);

    let hold = state_files::hold_in_force(paths);
    let machine = Machine::new(
        MachineConfig {
            stop_timeout: cfg.stop_timeout,
            post_start_timeout: cfg.post_start_timeout,
            condition_interval: cfg.condition_interval,
            has_post_start: cfg.post_start.is_some(),
            has_condition: cfg.condition.is_some(),
        },
        hold,
    );
    log::debug!("control socket {}", socket.path().display());
    let mut sup = Supervisor {
        cfg,
        machine,
        signals,
        socket,
        waiters: Vec::new(),
        born: Instant::now(),
    };
    let boot = sup.machine.boot();
    if let Some(code) = sup.execute(boot) {
        return Ok(code);
    }
    Ok(sup.event_loop())
}

impl Supervisor {
    fn event_loop(&mut self) -> u8 {
        loop {
            crate::logger::flush_pending();
            let timeout = self
                .machine
                .next_deadline()
                .map(|d| TimeSpec::from_duration(d.saturating_duration_since(Instant::now())));
            let (signals_ready, socket_ready, watch_ready) = {
                let watch = self.socket.watch_fd();
                let mut fds = [
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(watch.unwrap_or(self.signals.as_fd()), PollFlags::POLLIN),
                ];
                let used = if watch.is_some() { 3 } else { 2 };
                match ppoll(&mut fds[..used], timeout, None) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => log::warn!("ppoll: {e}"),
                }
                let ready = |i: usize| {
                    fds[..used]
                        .get(i)
                        .and_then(PollFd::revents)
                        .is_some_and(|r| !r.is_empty())
                };
                (ready(0), ready(1), ready(2))
            };
            if watch_ready {
                self.socket.on_watch_event();
            }
            if signals_ready && let Some(code) = self.handle_signals() {
                return self.exit(code);
            }
            if socket_ready && let Some(code) = self.handle_datagrams() {
                return self.exit(code);
            }
            if let Some(code) = self.feed(Event::Tick) {
                return self.exit(code);
            }
            self.notify_waiters();
        }
    }

    fn handle_signals(&mut self) -> Option<u8> {
        let mut child_exited = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    let event = match sig {
                        Signal::SIGCHLD => {
                            child_exited = true;
                            continue;
                        }
                        Signal::SIGTERM | Signal::SIGINT => {
                            log::info!("received {}: stopping", sig.as_str());
                            Event::Shutdown
                        }
                        other => {
                            log::debug!("forwarding {}", other.as_str());
                            Event::Forward(other)
                        }
                    };
                    if let Some(code) = self.feed(event) {
                        return Some(code);
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("reading the signalfd: {e}");
                    break;
                }
            }
        }
        if child_exited {
            return self.reap();
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
        self.feed(Event::Drained { children_left })
    }

    fn handle_datagrams(&mut self) -> Option<u8> {
        for _ in 0..DATAGRAMS_PER_TURN {
            let (command, sender) = match self.socket.recv() {
                Ok(Some((payload, sender))) => (ControlCommand::parse(payload), sender),
                Ok(None) => return None,
                Err(e) => {
                    log::warn!("reading the control socket: {e}");
                    return None;
                }
            };
            let Some(command) = command else {
                continue;
            };
            let exit = self.feed(Event::Command(command));
            // Logged after the command took effect, so that the write does
            // not delay a stop. Probes send STATUS every few seconds: keep
            // those out of the log.
            if command == ControlCommand::Status {
                log::debug!("received STATUS");
            } else {
                log::info!("received {}", command.as_str());
            }
            // Building the JSON line only for a sender that can be answered.
            if !sender.is_unnamed() {
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

    fn add_waiter(&mut self, sender: SocketAddr) {
        if sender.is_unnamed() || self.waiters.iter().any(|w| same_addr(w, &sender)) {
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

    fn exit(&mut self, code: u8) -> u8 {
        self.notify_waiters();
        code
    }

    pub fn status(&self) -> Status {
        Status {
            state: self.machine.state(),
            pid: self.machine.main_pid(),
            job: self.cfg.job.clone(),
            process: self.cfg.process.clone(),
            starts: self.machine.starts(),
            hold: self.machine.hold(),
            pending_start: self.machine.pending_start(),
            post_start: self.machine.post_start(),
            uptime_ms: self
                .machine
                .uptime(Instant::now())
                .map(|d| d.as_millis() as u64),
            last_exit: self.machine.last_exit(),
            drain: crate::protocol::Drain::None,
            drain_left_ms: None,
            age_ms: self.born.elapsed().as_millis() as u64,
        }
    }

    fn feed(&mut self, event: Event) -> Option<u8> {
        let actions = self.machine.step(Instant::now(), event);
        self.execute(actions)
    }

    /// Carry out actions in order; a spawn's outcome goes back to the
    /// machine at once, and the actions it returns join the queue.
    fn execute(&mut self, actions: Vec<Action>) -> Option<u8> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let follow_up = match action {
                Action::SpawnMain => Some(self.spawn_main()),
                Action::SpawnHook(kind) => Some(self.spawn_hook(kind)),
                Action::Signal(scope, sig) => {
                    for g in self.groups(scope) {
                        tree::signal_group(g, sig);
                    }
                    None
                }
                Action::Terminate => {
                    tree::terminate(&self.groups(Scope::Job));
                    None
                }
                Action::KillTree => {
                    tree::kill_tree(&self.groups(Scope::Job));
                    None
                }
                Action::WriteRunFiles(pid) => {
                    if let Err(e) = state_files::write_run_files(&self.cfg.paths, pid) {
                        log::error!("cannot write the sentinel or pidfile: {e}");
                    }
                    None
                }
                Action::RemoveRunFiles => {
                    if let Err(e) = state_files::remove_run_files(&self.cfg.paths) {
                        log::error!("cannot remove the sentinel or pidfile: {e}");
                    }
                    None
                }
                Action::WriteHold => {
                    if let Err(e) = state_files::write_hold(&self.cfg.paths) {
                        log::error!("cannot write the STOP marker: {e}");
                    }
                    None
                }
                Action::RemoveHold => {
                    if let Err(e) = state_files::remove_hold(&self.cfg.paths) {
                        log::error!("cannot remove the STOP marker: {e}");
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

    fn groups(&self, scope: Scope) -> Vec<Pid> {
        let main = self.machine.main_group();
        let hook = self.machine.hook_group();
        match scope {
            Scope::Main => main.into_iter().collect(),
            Scope::Job => main.into_iter().chain(hook).collect(),
        }
    }

    fn spawn_main(&mut self) -> Event {
        let (program, args) = self
            .cfg
            .command
            .split_first()
            .expect("clap requires COMMAND");
        match tree::spawn(program, args, Output::Inherit) {
            Ok(pid) => {
                log::info!(
                    "started {} as pid {pid} (job {}, process {})",
                    program.to_string_lossy(),
                    self.cfg.job,
                    self.cfg.process
                );
                Event::MainSpawned(pid)
            }
            Err(e) => {
                log::error!("{}", e.message);
                Event::MainSpawnFailed(e.code)
            }
        }
    }

    fn spawn_hook(&mut self, kind: HookKind) -> Event {
        let hook = match kind {
            HookKind::PostStart => self.cfg.post_start.as_ref(),
            HookKind::Condition => self.cfg.condition.as_ref(),
        }
        .expect("the machine asks only for configured hooks");
        if kind == HookKind::PostStart && find_program(&hook.program).is_none() {
            log::info!(
                "post-start {} not found: skipped",
                hook.program.to_string_lossy()
            );
            return Event::PostStartMissing;
        }
        let output = match kind {
            HookKind::PostStart => Output::Inherit,
            HookKind::Condition => Output::Discard,
        };
        match tree::spawn(&hook.program, &hook.args, output) {
            Ok(pid) => {
                log::debug!(
                    "started {kind:?} {} as pid {pid}",
                    hook.program.to_string_lossy()
                );
                if kind == HookKind::PostStart {
                    log::info!("running post-start {}", hook.program.to_string_lossy());
                }
                Event::HookSpawned(kind, pid)
            }
            Err(e) => {
                log::error!("{kind:?}: {}", e.message);
                Event::HookSpawnFailed(kind)
            }
        }
    }
}

/// A command "exists as a path or on PATH" (the post-start, the job).
fn find_program(program: &std::ffi::OsStr) -> Option<PathBuf> {
    let p = std::path::Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn same_addr(a: &SocketAddr, b: &SocketAddr) -> bool {
    use std::os::linux::net::SocketAddrExt;
    (a.as_pathname(), a.as_abstract_name()) == (b.as_pathname(), b.as_abstract_name())
}
