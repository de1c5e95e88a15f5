//! The one event loop (SPEC sections 3-5 and 8): a signalfd, the control
//! sockets, the socket directory's inotify watch, the drain script's stdout
//! and a round of STATUS to the pod's peers while one is out, and the
//! earliest deadline, waited on with one `ppoll`. It turns what happens into
//! `Event`s for the machine and carries out the `Action`s that come back,
//! in their order (a stop's signal first), writing the log lines they say.
//! Single threaded; with nothing due it sleeps without timeout.

use std::collections::VecDeque;
use std::io::Read;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use log::Level;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

mod children;
mod poll;
mod setup;

use self::poll::{Ready, Sources};
use crate::cli::RunConfig;
use crate::datagram::{Peer, Trust};
use crate::error::{Fatal, os_phrase};
use crate::exit;
use crate::logger::Limited;
use crate::machine::drain::MAX_OUTPUT;
use crate::machine::{Action, Child, Event, Machine};
use crate::peers::Barrier;
use crate::protocol::{ControlCommand, State, Status};
use crate::socket::{ControlSocket, Incoming};
use crate::state_files::{self, Base};
use crate::tree::{self, Inherited};

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

/// After `ppoll` itself fails (not EINTR), the loop pauses this long before
/// it reads every source without waiting, doubling up to `POLL_PAUSE_MAX`
/// while the failure lasts: a failure that persists must not spin.
const POLL_PAUSE_FIRST: Duration = Duration::from_millis(1);
const POLL_PAUSE_MAX: Duration = Duration::from_millis(100);

pub struct Supervisor {
    cfg: RunConfig,
    /// BASE's fd, beside `cfg.paths`: every state file is reached through it.
    base: Base,
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
    /// The STOP marker's guard says what it mends once per 10 s.
    hold_warned: Limited,
    /// The pause after the last failed `ppoll`, while they keep failing.
    poll_pause: Option<Duration>,
}

/// Set up everything fallible (signals, directories, socket) before the job
/// is started: an error here leaves nothing running and nothing bound.
pub fn run(cfg: RunConfig) -> Result<u8, Fatal> {
    // A command that does not exist at all fails before anything is
    // created; one that exists but cannot be executed fails at spawn (126).
    let program = cfg.command.program();
    if children::find_program(program).is_none() {
        return Err(Fatal::Exec {
            code: exit::NOT_FOUND,
            message: format!("{}: command not found", program.to_string_lossy()),
        });
    }
    let signals = setup::block_signals()?;
    setup::become_reaper()?;
    let inherited = tree::inherited_dispositions();
    let paths = &cfg.paths;
    let base = Base::open(&paths.base, true)
        .and_then(|base| state_files::prepare_dirs(&base, paths).map(|()| base))
        .map_err(|e| {
            let what = format!("cannot write under base directory {}", paths.base.display());
            Fatal::setup(what, e)
        })?;
    let pod = crate::rendezvous::pod_of(&paths.base).map_err(|e| {
        let data = paths.base.join("data");
        Fatal::setup(format!("cannot read {}", data.display()), e)
    })?;
    let socket = ControlSocket::bind(&base, paths, &pod, (cfg.socket_mode, cfg.socket_group))?;
    let barrier = Barrier::new(
        pod,
        socket.rendezvous_name().to_vec(),
        Trust::new(cfg.trust_uid),
    );
    // Left by a container-run that was killed: nothing runs now.
    state_files::remove_run_files(&base, paths)
        .map_err(|e| Fatal::setup("cannot remove stale run files", e))?;
    state_files::install_links(&base, paths);
    let hold = setup::hold_found(&base, &cfg);
    let machine = Machine::new(setup::machine_config(&cfg), hold);
    log::debug!(
        "control socket {}, rendezvous @{}",
        socket.path().display(),
        String::from_utf8_lossy(socket.rendezvous_name())
    );
    let mut sup = Supervisor {
        cfg,
        base,
        machine,
        signals,
        socket,
        waiters: Vec::new(),
        born: Instant::now(),
        inherited,
        drain_out: None,
        barrier,
        signalled: None,
        hold_warned: Limited::default(),
        poll_pause: None,
    };
    // A marker the job user planted while no container-run ran holds too,
    // but is replaced by container-run's own.
    sup.guard_hold();
    if let Some(code) = sup.feed(Event::Boot) {
        return Ok(code);
    }
    Ok(sup.event_loop())
}

impl Supervisor {
    fn event_loop(&mut self) -> u8 {
        loop {
            crate::logger::flush_pending();
            let ready = self.wait();
            if ready.watch {
                self.socket.on_watch_event(Instant::now());
                // Whatever the events said (an overflow names nothing):
                // one look at the marker per wake-up.
                self.guard_hold();
            }
            self.socket.on_deadline(Instant::now());
            let exit = self.turn(ready);
            self.notify_waiters();
            if let Some(code) = exit {
                return code;
            }
        }
    }

    /// One `ppoll` over the sources that exist now, until the earliest
    /// deadline (none: no timeout).
    fn wait(&mut self) -> Ready {
        let waits = [
            self.machine.next_deadline(),
            self.barrier.deadline(),
            self.socket.deadline(),
        ];
        let sources = Sources {
            signals: self.signals.as_fd(),
            socket: self.socket.as_fd(),
            watch: self.socket.watch_fd(),
            drain_out: self.drain_out.as_ref().map(|(out, _)| out.as_fd()),
            peers: self.barrier.fd(),
        };
        match poll::wait(sources, waits.into_iter().flatten().min()) {
            Ok(ready) => {
                self.poll_pause = None;
                ready
            }
            Err(Errno::EINTR) => Ready::default(),
            Err(e) => self.poll_failed(e),
        }
    }

    fn poll_failed(&mut self, e: Errno) -> Ready {
        let pause = match self.poll_pause {
            None => {
                log::error!("ppoll: {e}; reading every source without waiting while it fails");
                POLL_PAUSE_FIRST
            }
            Some(last) => (last * 2).min(POLL_PAUSE_MAX),
        };
        self.poll_pause = Some(pause);
        std::thread::sleep(pause);
        Ready::all()
    }

    /// One turn of the loop: every ready source, then due deadlines.
    /// `Some(code)` when container-run is to exit.
    fn turn(&mut self, ready: Ready) -> Option<u8> {
        if ready.signals
            && let Some(code) = self.handle_signals()
        {
            return Some(code);
        }
        if ready.socket
            && let Some(code) = self.handle_datagrams()
        {
            return Some(code);
        }
        if ready.drain_out
            && let Some(code) = self.read_drain_output()
        {
            return Some(code);
        }
        if let Some(code) = self.peers_turn(ready.peers) {
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
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => child_exited = true,
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                        self.signalled.get_or_insert_with(Instant::now);
                        events.push(Event::Shutdown(sig))
                    }
                    Ok(other) => {
                        log::debug!("forwarding {}", other.as_str());
                        events.push(Event::Forward(other));
                    }
                    Err(_) => {}
                },
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
        events.into_iter().find_map(|event| self.feed(event))
    }

    fn reap(&mut self) -> Option<u8> {
        let (reaped, mut children_left) = tree::reap_all();
        for r in reaped {
            log::debug!("reaped {} ({})", r.pid, r.exit);
            if let Some(code) = self.feed(Event::Reaped(r.pid, r.exit)) {
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
        // What the reaps caused may have spawned a child (a condition that
        // passed starts the post-start): "nothing left" is said only if it
        // is still true now.
        if !children_left {
            children_left = tree::has_children();
        }
        self.feed(Event::Drained(children_left))
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
            // Nothing before the machine's actions: a stop's signal is the
            // first thing a STOP does (the log line is one of its actions).
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

    /// Read what the drain script printed; at end of file, hand it to the
    /// machine. More than the contract allows is kept only as "too much".
    fn read_drain_output(&mut self) -> Option<u8> {
        let (file, buf) = self.drain_out.as_mut()?;
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let room = (MAX_OUTPUT + 1).saturating_sub(buf.len());
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
        let heard = match &event {
            Event::Command(ControlCommand::Status) => Some((Level::Debug, "STATUS")),
            Event::Command(command) => Some((Level::Info, command.as_str())),
            Event::Shutdown(signal) => Some((Level::Info, signal.as_str())),
            _ => None,
        };
        let actions = self.machine.step(Instant::now(), event);
        self.execute(actions, heard)
    }

    /// Carry out actions in order; what an action reports (a spawn's pid, a
    /// file that could not be written) goes back to the machine at once,
    /// and the actions that returns join the queue. What a command or
    /// signal was is logged once the signals it causes are out, before
    /// anything else it causes.
    fn execute(&mut self, actions: Vec<Action>, mut heard: Option<(Level, &str)>) -> Option<u8> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let signal = matches!(
                action,
                Action::Signal(..) | Action::Terminate(..) | Action::KillTree(..)
            );
            if let Some((level, what)) = heard.filter(|_| !signal) {
                log::log!(level, "received {what}");
                heard = None;
            }
            match self.perform(action) {
                ControlFlow::Break(code) => return Some(code),
                ControlFlow::Continue(Some(event)) => {
                    queue.extend(self.machine.step(Instant::now(), event));
                }
                ControlFlow::Continue(None) => {}
            }
        }
        if let Some((level, what)) = heard {
            log::log!(level, "received {what}");
        }
        None
    }

    fn perform(&mut self, action: Action) -> ControlFlow<u8, Option<Event>> {
        let (base, paths) = (&self.base, &self.cfg.paths);
        match action {
            Action::Spawn(child) => return ControlFlow::Continue(Some(self.spawn(child))),
            Action::Signal(group, signal) => tree::signal_group(group, signal),
            Action::Terminate(job, hook, signal) => tree::terminate(job, hook, signal),
            Action::Sweep(job, signal, skip, spare) => tree::sweep(job, signal, &skip, spare),
            Action::SignalMembers(group, signal) => tree::signal_members(group, signal),
            Action::KillTree(groups, spare) => tree::kill_tree(&groups, spare),
            Action::AskPeers => return ControlFlow::Continue(self.ask_peers()),
            Action::WriteRunFiles(pid) => {
                let written = state_files::write_run_files(base, paths, pid);
                report("cannot write the sentinel or pidfile", written);
            }
            Action::RemoveRunFiles => {
                let removed = state_files::remove_run_files(base, paths);
                report("cannot remove the sentinel or pidfile", removed);
            }
            Action::WriteHold => {
                let written = state_files::write_hold(base, paths);
                let what = format!("cannot write the STOP marker {}", paths.stopped.display());
                // A marker already there still holds.
                if !report(&what, written) && !state_files::hold_in_force(base, paths) {
                    return ControlFlow::Continue(Some(Event::HoldNotWritten));
                }
            }
            Action::RemoveHold => {
                report(
                    "cannot remove the STOP marker",
                    state_files::remove_hold(base, paths),
                );
            }
            Action::Log(level, text) => log::log!(level, "{text}"),
            Action::Exit(code) => return ControlFlow::Break(code),
        };
        ControlFlow::Continue(None)
    }

    /// Start a round of STATUS to the pod's peers; with none to ask, the
    /// answer is known at once.
    fn ask_peers(&mut self) -> Option<Event> {
        let now = Instant::now();
        let settling = self
            .signalled
            .is_some_and(|t| now < t + crate::machine::drain::SETTLE);
        self.barrier.ask(now, settling).map(Event::PeersAnswered)
    }

    /// The round of STATUS out, if any: read what came, and once it is
    /// complete, hand its tally to the machine.
    fn peers_turn(&mut self, _readable: bool) -> Option<u8> {
        self.barrier.deadline()?;
        let tally = self.barrier.on_ready(Instant::now())?;
        self.feed(Event::PeersAnswered(tally))
    }

    /// The STOP marker mirrors the hold while container-run runs (SPEC
    /// section 2): only START ends a hold, so a marker that someone else
    /// removed or replaced is written again, and one planted without a hold
    /// is removed. What it mends is said once per 10 s, with a count.
    fn guard_hold(&mut self) {
        let hold = self.machine.snapshot(Instant::now()).hold;
        let (base, paths) = (&self.base, &self.cfg.paths);
        let shown = paths.stopped.display();
        let (what, result) = match (hold, state_files::hold_is_ours(base, paths)) {
            (true, Some(true)) | (false, None) => return,
            (true, _) => (
                format!(
                    "the STOP marker {shown} was removed or replaced while the hold is in force: writing it again"
                ),
                state_files::write_hold(base, paths),
            ),
            (false, Some(_)) => (
                format!("a STOP marker {shown} appeared without an operator's STOP: removing it"),
                state_files::remove_hold(base, paths),
            ),
        };
        if let Some(held) = self.hold_warned.due(Instant::now()) {
            let what = match result {
                Ok(()) => what,
                Err(e) => format!("{what}: {}", os_phrase(&e)),
            };
            log::warn!("{}", Limited::text(&what, held));
        }
    }

    /// Start `child` as the machine asked; the drain script's stdout is
    /// read from then on.
    fn spawn(&mut self, child: Child) -> Event {
        let (started, stdout) = children::spawn(&self.cfg, &self.inherited, child);
        if let Some(file) = stdout {
            self.drain_out = Some((file, Vec::new()));
        }
        Event::Spawned(child, started)
    }
}

/// Log a failed file operation; whether it succeeded.
fn report(what: &str, result: std::io::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            log::error!("{what}: {}", os_phrase(&e));
            false
        }
    }
}
