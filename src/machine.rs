//! The supervisor's state machine (SPEC sections 4 and 5), pure: every
//! transition is `Machine::step(now, Event) -> Vec<Action>`, in this file
//! only. It performs no system call; the event loop in `supervisor` turns the
//! world into events and carries the actions out. Its invariants:
//! - `Running` iff the main process is alive and no stop has begun;
//! - `Stopped` only once no process of the tree is left;
//! - after any sequence of commands, the state reached is the one the last
//!   command asked for (a START during a stop is remembered, a later
//!   STOP/TERM forgets it).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::protocol::{ControlCommand, PostStart, State};

pub type Pid = i32;

#[derive(Debug, Clone, Copy)]
pub struct MachineConfig {
    pub stop_timeout: Duration,
    pub post_start_timeout: Duration,
    pub condition_interval: Duration,
    pub has_post_start: bool,
    pub has_condition: bool,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(u8),
    Signal(u8),
}

impl Exit {
    /// As a shell reports it, and as container-run exits: the code, or
    /// 128 + the signal.
    pub fn status(self) -> u8 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128u8.wrapping_add(s),
        }
    }
}

impl std::fmt::Display for Exit {
    /// "exited with status 3" or "was killed by signal 9 (SIGKILL)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => {
                write!(f, "was killed by signal {s}")?;
                match Signal::try_from(i32::from(s)) {
                    Ok(sig) => write!(f, " ({})", sig.as_str()),
                    Err(_) => Ok(()),
                }
            }
        }
    }
}

/// The two helper commands that run beside the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Condition,
    PostStart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Command(ControlCommand),
    /// SIGTERM or SIGINT to container-run.
    Shutdown,
    /// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH: for the main process group.
    Forward(Signal),
    MainSpawned(Pid),
    /// The main command could not be executed; the exit code says why.
    MainSpawnFailed(u8),
    HookSpawned(HookKind, Pid),
    /// The post-start command does not exist: it is skipped.
    PostStartMissing,
    /// The hook exists but could not be executed: a failed condition try,
    /// or a failed post-start.
    HookSpawnFailed(HookKind),
    /// A child of container-run ended.
    Reaped {
        pid: Pid,
        exit: Exit,
    },
    /// All exited children have been reaped; `children_left` says whether
    /// any child (and so any process of the tree) is still alive.
    Drained {
        children_left: bool,
    },
    /// Time passed; due deadlines fire.
    Tick,
}

/// Who receives a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main process's group.
    Main,
    /// The groups of the main process and of a running hook.
    Job,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SpawnMain,
    SpawnHook(HookKind),
    Signal(Scope, Signal),
    /// The start of a stop: SIGTERM, then SIGCONT (so that a process stopped
    /// with SIGSTOP acts on the pending SIGTERM), to the job's groups and to
    /// every other descendant of container-run.
    Terminate,
    /// SIGKILL to every process left of the tree.
    KillTree,
    WriteRunFiles(Pid),
    RemoveRunFiles,
    WriteHold,
    RemoveHold,
    Exit(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Idle,
    /// The condition failed; the next try is due at this instant.
    Waiting(Instant),
    Running(HookKind, Pid),
}

#[derive(Debug)]
pub struct Machine {
    cfg: MachineConfig,
    state: State,
    /// The main process while it is alive.
    main: Option<Pid>,
    /// Process groups of the current main process and hook, kept after their
    /// leader exits: other members of the group may still be alive.
    main_group: Option<Pid>,
    hook_group: Option<Pid>,
    hook: Hook,
    post_start: PostStart,
    post_start_deadline: Option<Instant>,
    stop_deadline: Option<Instant>,
    killing: bool,
    pending_start: bool,
    hold: bool,
    /// Set once container-run has decided to exit when the stop completes.
    exit_code: Option<u8>,
    starts: u64,
    started_at: Option<Instant>,
    last_exit: Option<u8>,
}

impl Machine {
    /// A machine that has not started anything yet; `hold` says whether the
    /// STOP marker was found. Feed it `start()` to begin.
    pub fn new(cfg: MachineConfig, hold: bool) -> Machine {
        Machine {
            cfg,
            state: State::Stopped,
            main: None,
            main_group: None,
            hook_group: None,
            hook: Hook::Idle,
            post_start: PostStart::None,
            post_start_deadline: None,
            stop_deadline: None,
            killing: false,
            pending_start: false,
            hold,
            exit_code: None,
            starts: 0,
            started_at: None,
            last_exit: None,
        }
    }

    /// The first action: start the job, unless an operator's STOP is in force.
    pub fn boot(&self) -> Vec<Action> {
        if self.hold {
            log::info!("STOP marker found: staying stopped until START");
            Vec::new()
        } else {
            vec![Action::SpawnMain]
        }
    }

    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut acts = Vec::new();
        match event {
            Event::Command(cmd) => self.command(now, cmd, &mut acts),
            Event::Shutdown => match self.state {
                State::Stopped => acts.push(Action::Exit(*self.exit_code.get_or_insert(0))),
                State::Running => {
                    self.exit_code = Some(0);
                    self.begin_stop(now, &mut acts);
                }
                State::Stopping | State::Draining => {
                    // A repeated signal neither restarts the timeout nor
                    // replaces a crash status already recorded.
                    self.exit_code.get_or_insert(0);
                    self.pending_start = false;
                }
            },
            Event::Forward(sig) => {
                if self.main_group.is_some() {
                    acts.push(Action::Signal(Scope::Main, sig));
                }
            }
            Event::MainSpawned(pid) => {
                self.state = State::Running;
                self.main = Some(pid);
                self.main_group = Some(pid);
                self.starts += 1;
                self.started_at = Some(now);
                acts.push(Action::WriteRunFiles(pid));
                self.begin_post_start(now, &mut acts);
            }
            Event::MainSpawnFailed(code) => {
                self.last_exit = Some(code);
                acts.push(Action::Exit(code));
            }
            Event::HookSpawned(kind, pid) => {
                self.hook = Hook::Running(kind, pid);
                self.hook_group = Some(pid);
                if kind == HookKind::PostStart {
                    self.post_start = PostStart::Running;
                }
            }
            Event::PostStartMissing => {
                self.hook = Hook::Idle;
                self.post_start = PostStart::Skipped;
                self.post_start_deadline = None;
            }
            Event::HookSpawnFailed(HookKind::Condition) => {
                self.hook = Hook::Waiting(now + self.cfg.condition_interval);
            }
            Event::HookSpawnFailed(HookKind::PostStart) => {
                if self.state == State::Running {
                    self.fail_post_start(now, &mut acts);
                }
            }
            Event::Reaped { pid, exit } => self.reaped(now, pid, exit, &mut acts),
            Event::Drained { children_left } => {
                if self.state == State::Stopping {
                    if !children_left {
                        self.finish_stop(&mut acts);
                    } else if self.killing {
                        // Orphans re-parented to us since the last sweep.
                        acts.push(Action::KillTree);
                    }
                }
            }
            Event::Tick => self.tick(now, &mut acts),
        }
        acts
    }

    fn command(&mut self, now: Instant, cmd: ControlCommand, acts: &mut Vec<Action>) {
        match cmd {
            ControlCommand::Stop => {
                // Signals first: the marker's file system writes must not
                // delay the stop.
                self.stop_request(now, acts);
                self.hold = true;
                acts.push(Action::WriteHold);
            }
            ControlCommand::Term => self.stop_request(now, acts),
            ControlCommand::Start => {
                if self.exit_code.is_some() {
                    log::info!("START ignored: container-run is exiting");
                    return;
                }
                if self.hold {
                    self.hold = false;
                    acts.push(Action::RemoveHold);
                }
                match self.state {
                    State::Running => {}
                    State::Stopping | State::Draining => self.pending_start = true,
                    State::Stopped => acts.push(Action::SpawnMain),
                }
            }
            ControlCommand::Quit => {
                if self.state != State::Stopped {
                    acts.push(Action::Signal(Scope::Job, Signal::SIGQUIT));
                }
            }
            ControlCommand::Status => {}
        }
    }

    fn stop_request(&mut self, now: Instant, acts: &mut Vec<Action>) {
        self.pending_start = false;
        if self.state == State::Running {
            self.begin_stop(now, acts);
        }
    }

    fn begin_stop(&mut self, now: Instant, acts: &mut Vec<Action>) {
        self.state = State::Stopping;
        self.post_start_deadline = None;
        if let Hook::Waiting(_) = self.hook {
            self.hook = Hook::Idle;
        }
        if matches!(self.post_start, PostStart::Pending | PostStart::Running) {
            self.post_start = PostStart::Cancelled;
        }
        acts.push(Action::Terminate);
        self.stop_deadline = Some(now + self.cfg.stop_timeout);
    }

    fn finish_stop(&mut self, acts: &mut Vec<Action>) {
        self.state = State::Stopped;
        self.main_group = None;
        self.hook_group = None;
        self.hook = Hook::Idle;
        self.stop_deadline = None;
        self.killing = false;
        self.started_at = None;
        acts.push(Action::RemoveRunFiles);
        if let Some(code) = self.exit_code {
            acts.push(Action::Exit(code));
        } else if self.pending_start {
            self.pending_start = false;
            acts.push(Action::SpawnMain);
        }
    }

    fn begin_post_start(&mut self, now: Instant, acts: &mut Vec<Action>) {
        if !self.cfg.has_post_start {
            return;
        }
        self.post_start_deadline = Some(now + self.cfg.post_start_timeout);
        if self.cfg.has_condition {
            self.post_start = PostStart::Pending;
            acts.push(Action::SpawnHook(HookKind::Condition));
        } else {
            self.post_start = PostStart::Running;
            acts.push(Action::SpawnHook(HookKind::PostStart));
        }
    }

    fn reaped(&mut self, now: Instant, pid: Pid, exit: Exit, acts: &mut Vec<Action>) {
        let status = exit.status();
        if self.main == Some(pid) {
            self.main = None;
            self.last_exit = Some(status);
            if self.state != State::Running {
                return; // an exit we asked for
            }
            if status == 0 {
                log::info!("process {pid} exited with status 0: stopped, waiting for START");
            } else {
                log::error!("process {pid} {exit}: stopping and exiting with {status}");
                self.exit_code = Some(status);
            }
            self.begin_stop(now, acts);
            return;
        }
        let Hook::Running(kind, hook_pid) = self.hook else {
            return;
        };
        if hook_pid != pid {
            return; // an orphan of the tree
        }
        self.hook = Hook::Idle;
        if self.state != State::Running {
            return;
        }
        match (kind, status) {
            (HookKind::Condition, 0) => acts.push(Action::SpawnHook(HookKind::PostStart)),
            (HookKind::Condition, _) => {
                log::debug!("post-start condition {exit}");
                self.hook = Hook::Waiting(now + self.cfg.condition_interval);
            }
            (HookKind::PostStart, 0) => {
                self.post_start = PostStart::Done;
                self.post_start_deadline = None;
            }
            (HookKind::PostStart, _) => {
                log::error!("post-start {exit}: stopping the job and exiting with 1");
                self.fail_post_start(now, acts);
            }
        }
    }

    fn fail_post_start(&mut self, now: Instant, acts: &mut Vec<Action>) {
        self.exit_code = Some(1);
        self.begin_stop(now, acts);
        self.post_start = PostStart::Failed;
    }

    fn tick(&mut self, now: Instant, acts: &mut Vec<Action>) {
        if self.stop_deadline.is_some_and(|d| d <= now) {
            self.stop_deadline = None;
            self.killing = true;
            log::info!(
                "stop timeout of {:?} reached: killing what is left",
                self.cfg.stop_timeout
            );
            acts.push(Action::KillTree);
        }
        if self.post_start_deadline.is_some_and(|d| d <= now) && self.state == State::Running {
            log::error!(
                "post-start did not finish within {:?}: stopping the job and exiting with 1",
                self.cfg.post_start_timeout
            );
            self.fail_post_start(now, acts);
        }
        if let Hook::Waiting(at) = self.hook
            && at <= now
        {
            self.hook = Hook::Idle;
            acts.push(Action::SpawnHook(HookKind::Condition));
        }
    }

    /// The earliest instant at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiting = match self.hook {
            Hook::Waiting(at) => Some(at),
            _ => None,
        };
        [self.stop_deadline, self.post_start_deadline, waiting]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn main_pid(&self) -> Option<Pid> {
        self.main
    }
    pub fn main_group(&self) -> Option<Pid> {
        self.main_group
    }
    pub fn hook_group(&self) -> Option<Pid> {
        self.hook_group
    }
    pub fn hold(&self) -> bool {
        self.hold
    }
    pub fn pending_start(&self) -> bool {
        self.pending_start
    }
    pub fn starts(&self) -> u64 {
        self.starts
    }
    pub fn post_start(&self) -> PostStart {
        self.post_start
    }
    pub fn last_exit(&self) -> Option<u8> {
        self.last_exit
    }
    pub fn uptime(&self, now: Instant) -> Option<Duration> {
        self.started_at.map(|t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ControlCommand::*;

    const STOP_TIMEOUT: Duration = Duration::from_secs(20);

    fn cfg(post_start: bool, condition: bool) -> MachineConfig {
        MachineConfig {
            stop_timeout: STOP_TIMEOUT,
            post_start_timeout: Duration::from_secs(60),
            condition_interval: Duration::from_secs(3),
            has_post_start: post_start,
            has_condition: condition,
        }
    }

    /// A machine with the main process running as `pid`.
    fn running(pid: Pid) -> (Machine, Instant) {
        let mut m = Machine::new(cfg(false, false), false);
        let t = Instant::now();
        assert_eq!(m.boot(), [Action::SpawnMain]);
        assert_eq!(
            m.step(t, Event::MainSpawned(pid)),
            [Action::WriteRunFiles(pid)]
        );
        assert_eq!(m.state(), State::Running);
        (m, t)
    }

    fn stop_signals() -> Vec<Action> {
        vec![Action::Terminate]
    }

    #[test]
    fn stop_then_tree_empty_reaches_stopped() {
        let (mut m, t) = running(10);
        let mut want = stop_signals();
        want.push(Action::WriteHold);
        assert_eq!(m.step(t, Event::Command(Stop)), want);
        assert_eq!(m.state(), State::Stopping);
        assert!(m.hold());
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 10,
                    exit: Exit::Signal(15)
                }
            ),
            []
        );
        assert_eq!(m.main_pid(), None);
        // Files stay until nothing is left.
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: true
                }
            ),
            []
        );
        assert_eq!(m.state(), State::Stopping);
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles]
        );
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn term_is_a_stop_without_hold() {
        let (mut m, t) = running(10);
        assert_eq!(m.step(t, Event::Command(Term)), stop_signals());
        assert!(!m.hold());
    }

    #[test]
    fn stop_when_stopped_still_writes_the_hold() {
        let (mut m, t) = running(10);
        m.step(t, Event::Command(Term));
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Code(0),
            },
        );
        m.step(
            t,
            Event::Drained {
                children_left: false,
            },
        );
        assert!(!m.hold());
        assert_eq!(m.step(t, Event::Command(Stop)), [Action::WriteHold]);
        assert!(m.hold());
        assert_eq!(m.step(t, Event::Command(Term)), []);
        assert_eq!(m.step(t, Event::Command(Stop)), [Action::WriteHold]);
    }

    #[test]
    fn start_removes_hold_and_spawns() {
        let mut m = Machine::new(cfg(false, false), true);
        let t = Instant::now();
        assert_eq!(m.boot(), []);
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(
            m.step(t, Event::Command(Start)),
            [Action::RemoveHold, Action::SpawnMain]
        );
        assert_eq!(m.step(t, Event::MainSpawned(5)), [Action::WriteRunFiles(5)]);
        assert_eq!(m.starts(), 1);
        assert_eq!(m.step(t, Event::Command(Start)), []);
    }

    #[test]
    fn start_during_stop_starts_once_stopped_and_last_command_wins() {
        let (mut m, t) = running(10);
        m.step(t, Event::Command(Stop));
        assert_eq!(m.step(t, Event::Command(Start)), [Action::RemoveHold]);
        assert!(m.pending_start());
        // STOP again cancels the pending start.
        assert_eq!(m.step(t, Event::Command(Stop)), [Action::WriteHold]);
        assert!(!m.pending_start());
        assert_eq!(m.step(t, Event::Command(Start)), [Action::RemoveHold]);
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Signal(15),
            },
        );
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles, Action::SpawnMain]
        );
        m.step(t, Event::MainSpawned(11));
        assert_eq!(m.state(), State::Running);
        assert_eq!(m.starts(), 2);
    }

    #[test]
    fn alternating_burst_ends_in_the_last_state_asked() {
        for last_is_stop in [true, false] {
            let (mut m, t) = running(10);
            let mut pid = 10;
            for i in 0..200 {
                let cmd = if i % 2 == 0 { Stop } else { Start };
                let acts = m.step(t, Event::Command(cmd));
                if acts.contains(&Action::SpawnMain) {
                    pid += 1;
                    m.step(t, Event::MainSpawned(pid));
                }
            }
            if last_is_stop {
                m.step(t, Event::Command(Stop));
            }
            // The child dies of the SIGTERM, the tree empties.
            if m.state() == State::Stopping {
                m.step(
                    t,
                    Event::Reaped {
                        pid,
                        exit: Exit::Signal(15),
                    },
                );
                let acts = m.step(
                    t,
                    Event::Drained {
                        children_left: false,
                    },
                );
                if acts.contains(&Action::SpawnMain) {
                    m.step(t, Event::MainSpawned(pid + 1));
                }
            }
            let want = if last_is_stop {
                State::Stopped
            } else {
                State::Running
            };
            assert_eq!(m.state(), want);
            assert_eq!(m.hold(), last_is_stop);
        }
    }

    #[test]
    fn stop_timeout_kills_the_tree_and_keeps_killing_orphans() {
        let (mut m, t) = running(10);
        m.step(t, Event::Command(Term));
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));
        assert_eq!(m.step(t + Duration::from_secs(19), Event::Tick), []);
        let late = t + STOP_TIMEOUT;
        assert_eq!(m.step(late, Event::Tick), [Action::KillTree]);
        assert_eq!(m.next_deadline(), None);
        m.step(
            late,
            Event::Reaped {
                pid: 10,
                exit: Exit::Signal(9),
            },
        );
        assert_eq!(
            m.step(
                late,
                Event::Drained {
                    children_left: true
                }
            ),
            [Action::KillTree]
        );
        assert_eq!(
            m.step(
                late,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles]
        );
    }

    #[test]
    fn main_exit_zero_stops_and_stays_up() {
        let (mut m, t) = running(10);
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 10,
                    exit: Exit::Code(0)
                }
            ),
            stop_signals()
        );
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles]
        );
        assert_eq!(m.state(), State::Stopped);
        assert!(!m.hold(), "an exit by itself is not an operator's hold");
        assert_eq!(m.last_exit(), Some(0));
        assert_eq!(m.step(t, Event::Command(Start)), [Action::SpawnMain]);
    }

    #[test]
    fn main_crash_exits_with_its_status_after_the_tree_is_gone() {
        for exit in [
            Exit::Code(1),
            Exit::Code(3),
            Exit::Signal(9),
            Exit::Signal(15),
        ] {
            let status = exit.status();
            let (mut m, t) = running(10);
            assert_eq!(m.step(t, Event::Reaped { pid: 10, exit }), stop_signals());
            // A START during the clean-up does not bring it back.
            assert_eq!(m.step(t, Event::Command(Start)), []);
            assert_eq!(
                m.step(
                    t,
                    Event::Drained {
                        children_left: false
                    }
                ),
                [Action::RemoveRunFiles, Action::Exit(status)]
            );
        }
    }

    #[test]
    fn shutdown_stops_then_exits_zero_and_repeat_keeps_the_deadline() {
        let (mut m, t) = running(10);
        assert_eq!(m.step(t, Event::Shutdown), stop_signals());
        let later = t + Duration::from_secs(5);
        assert_eq!(m.step(later, Event::Shutdown), []);
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));
        m.step(
            later,
            Event::Reaped {
                pid: 10,
                exit: Exit::Signal(15),
            },
        );
        assert_eq!(
            m.step(
                later,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn shutdown_when_stopped_exits_at_once() {
        let mut m = Machine::new(cfg(false, false), true);
        assert_eq!(m.step(Instant::now(), Event::Shutdown), [Action::Exit(0)]);
    }

    #[test]
    fn shutdown_after_crash_keeps_the_crash_status() {
        let (mut m, t) = running(10);
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Code(2),
            },
        );
        m.step(t, Event::Shutdown);
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles, Action::Exit(2)]
        );
    }

    #[test]
    fn spawn_failure_exits_with_its_code() {
        let mut m = Machine::new(cfg(false, false), false);
        assert_eq!(
            m.step(Instant::now(), Event::MainSpawnFailed(127)),
            [Action::Exit(127)]
        );
    }

    #[test]
    fn signals_are_forwarded_to_the_main_group_only_while_it_exists() {
        let (mut m, t) = running(10);
        assert_eq!(
            m.step(t, Event::Forward(Signal::SIGHUP)),
            [Action::Signal(Scope::Main, Signal::SIGHUP)]
        );
        assert_eq!(
            m.step(t, Event::Command(Quit)),
            [Action::Signal(Scope::Job, Signal::SIGQUIT)]
        );
        m.step(t, Event::Command(Term));
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Code(0),
            },
        );
        m.step(
            t,
            Event::Drained {
                children_left: false,
            },
        );
        assert_eq!(m.step(t, Event::Forward(Signal::SIGUSR1)), []);
        assert_eq!(m.step(t, Event::Command(Quit)), []);
    }

    #[test]
    fn orphans_and_unknown_pids_change_nothing() {
        let (mut m, t) = running(10);
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 99,
                    exit: Exit::Code(1)
                }
            ),
            []
        );
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: true
                }
            ),
            []
        );
        assert_eq!(m.state(), State::Running);
    }

    #[test]
    fn post_start_with_condition_retries_then_runs() {
        let mut m = Machine::new(cfg(true, true), false);
        let t = Instant::now();
        assert_eq!(
            m.step(t, Event::MainSpawned(10)),
            [
                Action::WriteRunFiles(10),
                Action::SpawnHook(HookKind::Condition)
            ]
        );
        assert_eq!(m.post_start(), PostStart::Pending);
        m.step(t, Event::HookSpawned(HookKind::Condition, 20));
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 20,
                    exit: Exit::Code(1)
                }
            ),
            []
        );
        let retry = t + Duration::from_secs(3);
        assert_eq!(m.next_deadline(), Some(retry));
        assert_eq!(m.step(t + Duration::from_secs(2), Event::Tick), []);
        assert_eq!(
            m.step(retry, Event::Tick),
            [Action::SpawnHook(HookKind::Condition)]
        );
        m.step(retry, Event::HookSpawned(HookKind::Condition, 21));
        assert_eq!(
            m.step(
                retry,
                Event::Reaped {
                    pid: 21,
                    exit: Exit::Code(0)
                }
            ),
            [Action::SpawnHook(HookKind::PostStart)]
        );
        m.step(retry, Event::HookSpawned(HookKind::PostStart, 22));
        assert_eq!(m.post_start(), PostStart::Running);
        assert_eq!(
            m.step(
                retry,
                Event::Reaped {
                    pid: 22,
                    exit: Exit::Code(0)
                }
            ),
            []
        );
        assert_eq!(m.post_start(), PostStart::Done);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn failing_post_start_stops_the_job_and_exits_one() {
        let mut m = Machine::new(cfg(true, false), false);
        let t = Instant::now();
        m.step(t, Event::MainSpawned(10));
        m.step(t, Event::HookSpawned(HookKind::PostStart, 20));
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 20,
                    exit: Exit::Code(2)
                }
            ),
            stop_signals()
        );
        assert_eq!(m.post_start(), PostStart::Failed);
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Signal(15),
            },
        );
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles, Action::Exit(1)]
        );
    }

    #[test]
    fn post_start_timeout_fails() {
        let mut m = Machine::new(cfg(true, true), false);
        let t = Instant::now();
        m.step(t, Event::MainSpawned(10));
        m.step(t, Event::HookSpawned(HookKind::Condition, 20));
        m.step(
            t,
            Event::Reaped {
                pid: 20,
                exit: Exit::Code(1),
            },
        );
        let end = t + Duration::from_secs(60);
        let acts = m.step(end, Event::Tick);
        assert_eq!(acts, stop_signals());
        assert_eq!(m.post_start(), PostStart::Failed);
        assert_eq!(m.state(), State::Stopping);
    }

    #[test]
    fn stop_cancels_post_start_without_failure_and_start_reruns_it() {
        let mut m = Machine::new(cfg(true, false), false);
        let t = Instant::now();
        m.step(t, Event::MainSpawned(10));
        m.step(t, Event::HookSpawned(HookKind::PostStart, 20));
        m.step(t, Event::Command(Stop));
        assert_eq!(m.post_start(), PostStart::Cancelled);
        assert_eq!(
            m.step(
                t,
                Event::Reaped {
                    pid: 20,
                    exit: Exit::Signal(15)
                }
            ),
            []
        );
        m.step(
            t,
            Event::Reaped {
                pid: 10,
                exit: Exit::Signal(15),
            },
        );
        assert_eq!(
            m.step(
                t,
                Event::Drained {
                    children_left: false
                }
            ),
            [Action::RemoveRunFiles]
        );
        m.step(t, Event::Command(Start));
        assert_eq!(
            m.step(t, Event::MainSpawned(11)),
            [
                Action::WriteRunFiles(11),
                Action::SpawnHook(HookKind::PostStart)
            ]
        );
    }

    #[test]
    fn stop_during_condition_wait_cancels_the_retry() {
        let mut m = Machine::new(cfg(true, true), false);
        let t = Instant::now();
        m.step(t, Event::MainSpawned(10));
        m.step(t, Event::HookSpawned(HookKind::Condition, 20));
        m.step(
            t,
            Event::Reaped {
                pid: 20,
                exit: Exit::Code(1),
            },
        );
        m.step(t, Event::Command(Stop));
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));
        assert_eq!(m.step(t + Duration::from_secs(3), Event::Tick), []);
    }

    #[test]
    fn missing_post_start_is_skipped() {
        let mut m = Machine::new(cfg(true, false), false);
        let t = Instant::now();
        m.step(t, Event::MainSpawned(10));
        assert_eq!(m.step(t, Event::PostStartMissing), []);
        assert_eq!(m.post_start(), PostStart::Skipped);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.state(), State::Running);
    }

    #[test]
    fn exits_read_as_an_operator_expects() {
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
        assert_eq!(Exit::Code(130).status(), 130);
        assert_eq!(Exit::Code(130).to_string(), "exited with status 130");
        assert_eq!(Exit::Signal(9).status(), 137);
        assert_eq!(
            Exit::Signal(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }
}
