//! The supervisor's state machine (SPEC sections 4, 5, 8 and 9), pure: the
//! state is one `Phase` that carries only its own data, and every transition
//! is `Machine::step(now, Event) -> Vec<Action>`, a `match` over phase and
//! event, in this file only. It makes no system call; the loop in
//! `supervisor` turns the world into events and carries the actions out.
//! Invariants:
//! - `Running`/`Draining` iff the main process is alive and no stop began;
//! - `Stopped` only once no process of the tree is left;
//! - after any sequence of commands, the state reached is the one the last
//!   command asked for (a START during a stop is `Then::Start`, a later
//!   STOP/TERM replaces it);
//! - every wait is a deadline that `next_deadline` reports.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::drain::{self, DrainCall, Verdict};
use crate::exit;
use crate::protocol::{ControlCommand, Drain, PostStart, State};
use crate::tree::{Exit, Pid};

/// How long after its SIGTERM a container-run also waits for peers whose
/// drain has not started yet: kubelet signals a pod's containers within
/// moments of each other (SPEC section 8).
pub const SETTLE: Duration = Duration::from_secs(2);
/// How often peers are asked again while one of them holds the barrier.
pub const PEER_RECHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostStartPlan {
    None,
    Direct,
    AfterCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPlan {
    /// `--drain-timeout 0`: no drain, no barrier.
    Off,
    /// No `--drain-name`: only the pod-wide barrier, bounded by `timeout`.
    Barrier { timeout: Duration },
    /// The drain script, then the barrier, both bounded by `timeout`.
    Script { timeout: Duration },
}

#[derive(Debug, Clone, Copy)]
pub struct MachineConfig {
    pub stop_timeout: Duration,
    pub post_start_timeout: Duration,
    pub condition_interval: Duration,
    pub post_start: PostStartPlan,
    pub drain: DrainPlan,
    pub errand: bool,
    /// What every stop sends first to the job's process group.
    pub stop_signal: Signal,
}

/// The children container-run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Main,
    Condition,
    PostStart,
    Drain(DrainCall),
}

/// What the peers of the pod said in one round of STATUS (only answers
/// from root or container-run's own uid count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peers {
    /// Peers whose drain script (or its waits) runs.
    pub draining: usize,
    /// Running peers with a drain configured that has not begun.
    pub ready: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// container-run is set up: start the job, unless a hold is in force.
    Boot,
    Command(ControlCommand),
    /// SIGTERM or SIGINT to container-run.
    Shutdown,
    /// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH: for the main group.
    Forward(Signal),
    Spawned(Child, Pid),
    /// The child exists but could not be executed; the code says why.
    SpawnFailed(Child, u8),
    /// The post-start or drain command does not exist: skipped.
    Missing(Child),
    /// A child of container-run ended.
    Reaped {
        pid: Pid,
        exit: Exit,
    },
    /// All exited children are reaped; `children_left` says whether any
    /// process of the tree is still alive.
    Drained {
        children_left: bool,
    },
    /// The drain script's stdout, read to its end.
    DrainOutput(Vec<u8>),
    /// A round of STATUS to the pod's other container-runs is complete.
    PeersAnswered(Peers),
    /// The STOP marker could not be written: the hold will not survive a
    /// container restart.
    HoldNotWritten,
    /// Time passed; due deadlines fire.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn(Child),
    Signal {
        group: Pid,
        signal: Signal,
    },
    /// The start of a stop: `signal` to the job's group, SIGTERM to the
    /// helpers' groups, then SIGCONT to all of them (a process stopped with
    /// SIGSTOP must act on it); SIGTERM and SIGCONT to every other
    /// descendant except the group `spare`.
    Terminate {
        job: Pid,
        helpers: Vec<Pid>,
        signal: Signal,
        spare: Option<Pid>,
    },
    /// SIGKILL to the groups and to every process left of the tree, except
    /// the group `spare` (a drain script allowed to finish).
    KillTree {
        groups: Vec<Pid>,
        spare: Option<Pid>,
    },
    /// Start a round of STATUS to the pod's other container-runs.
    AskPeers,
    WriteRunFiles(Pid),
    RemoveRunFiles,
    WriteHold,
    RemoveHold,
    Exit(u8),
}

/// What happens once a stop has ended (s6's "exit when the child is gone"
/// is a state, not a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Stay,
    Start,
    Exit(u8),
    /// An errand ends with its own status (SPEC section 9).
    ExitWithJob,
}

/// The post-start of the current run of the main process; each state with
/// a child or a wait carries the deadline of the whole post-start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Idle,
    Launching(Instant),
    ConditionDue { at: Instant, deadline: Instant },
    Condition { pid: Pid, deadline: Instant },
    PostStart { pid: Pid, deadline: Instant },
}

impl Hook {
    fn group(self) -> Option<Pid> {
        match self {
            Hook::Condition { pid, .. } | Hook::PostStart { pid, .. } => Some(pid),
            _ => None,
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Hook::Idle => None,
            Hook::Launching(deadline)
            | Hook::ConditionDue { deadline, .. }
            | Hook::Condition { deadline, .. }
            | Hook::PostStart { deadline, .. } => Some(deadline),
        }
    }
}

/// One call of the drain script, until both its exit and its output are in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    pid: Pid,
    exit: Option<Exit>,
    output: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DrainStep {
    Launching,
    Script(Script),
    Pause {
        until: Instant,
        check: bool,
    },
    /// At the barrier; `next_check` is `None` while a round of STATUS is out.
    Barrier {
        result: Drain,
        next_check: Option<Instant>,
        busy: usize,
    },
}

/// A drain script that a TERM or the job's own exit lets finish while the
/// job stops.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LateDrain {
    script: Script,
    deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Stopped,
    Running {
        main: Pid,
        since: Instant,
        hook: Hook,
    },
    Draining {
        main: Pid,
        since: Instant,
        signalled: Instant,
        deadline: Instant,
        /// A post-start cancelled by the SIGTERM, still to be stopped.
        hook_group: Option<Pid>,
        step: DrainStep,
    },
    Stopping {
        /// The main process while it is alive; its group outlives it.
        main: Option<Pid>,
        since: Instant,
        group: Pid,
        helpers: Vec<Pid>,
        /// `None` once SIGKILL went out.
        kill_at: Option<Instant>,
        then: Then,
        drain: Option<LateDrain>,
    },
}

/// The status snapshot the loop turns into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub pid: Option<Pid>,
    pub starts: u64,
    pub hold: bool,
    pub pending_start: bool,
    pub exiting: bool,
    pub post_start: PostStart,
    pub uptime: Option<Duration>,
    pub last_exit: Option<u8>,
    pub drain: Drain,
    pub drain_left: Option<Duration>,
    pub stop_left: Option<Duration>,
}

#[derive(Debug)]
pub struct Machine {
    cfg: MachineConfig,
    phase: Phase,
    /// An operator's STOP is in force (the marker exists).
    hold: bool,
    post_start: PostStart,
    /// The drain's last result, when not draining now.
    drain: Drain,
    starts: u64,
    last_exit: Option<Exit>,
}

/// `now + d`, or a time beyond any deadline when that does not fit the clock.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// SIGKILL to the job's group, the helpers' groups and whatever else is
/// left of the tree, except the group `spare`.
fn kill_tree(group: Pid, helpers: &[Pid], spare: Option<Pid>) -> Action {
    Action::KillTree {
        groups: std::iter::once(group)
            .chain(helpers.iter().copied())
            .collect(),
        spare,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Machine {
    /// `hold` says whether the STOP marker was found.
    pub fn new(cfg: MachineConfig, hold: bool) -> Machine {
        let drain = match cfg.drain {
            DrainPlan::Script { .. } => Drain::Ready,
            _ => Drain::None,
        };
        Machine {
            cfg,
            phase: Phase::Stopped,
            hold,
            post_start: PostStart::None,
            drain,
            starts: 0,
            last_exit: None,
        }
    }

    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut acts = Vec::new();
        match event {
            Event::Boot => {
                if !self.hold {
                    acts.push(Action::Spawn(Child::Main));
                }
            }
            Event::Command(cmd) => self.command(now, cmd, &mut acts),
            Event::Shutdown => self.shutdown(now, &mut acts),
            Event::Forward(signal) => {
                if let Some(group) = self.main_group() {
                    acts.push(Action::Signal { group, signal });
                }
            }
            Event::Spawned(child, pid) => self.spawned(now, child, pid, &mut acts),
            Event::SpawnFailed(child, code) => self.spawn_failed(now, child, code, &mut acts),
            Event::Missing(child) => self.missing(child, &mut acts),
            Event::Reaped { pid, exit } => self.reaped(now, pid, exit, &mut acts),
            Event::Drained { children_left } => self.drained(children_left, &mut acts),
            Event::DrainOutput(out) => self.drain_output(now, out, &mut acts),
            Event::PeersAnswered(peers) => self.peers_answered(now, peers, &mut acts),
            Event::HoldNotWritten => {
                log::error!(
                    "the STOP marker could not be written: a container restart will run the job again"
                );
                self.hold = false;
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
                self.stop_request(now, false, acts);
                self.hold = true;
                acts.push(Action::WriteHold);
            }
            ControlCommand::Term => self.stop_request(now, true, acts),
            ControlCommand::Start => self.start_request(acts),
            ControlCommand::Quit => {
                for group in self.groups() {
                    acts.push(Action::Signal {
                        group,
                        signal: Signal::SIGQUIT,
                    });
                }
            }
            ControlCommand::Status => {}
        }
    }

    /// STOP (`term` false) or TERM (`term` true).
    fn stop_request(&mut self, now: Instant, term: bool, acts: &mut Vec<Action>) {
        // An errand's container-run ends on TERM, with the errand's status.
        let after_term = if term && self.cfg.errand {
            Then::ExitWithJob
        } else {
            Then::Stay
        };
        match &mut self.phase {
            Phase::Stopped => {
                if after_term == Then::ExitWithJob {
                    acts.push(Action::Exit(self.job_status()));
                }
            }
            Phase::Running { .. } => self.begin_stop(now, after_term, None, acts),
            Phase::Draining { step, deadline, .. } => {
                let deadline = *deadline;
                let step = std::mem::replace(step, DrainStep::Launching);
                // TERM (a drain script's own `bpm stop`) lets the script run
                // to its end; STOP ends it at once.
                let late = match step {
                    DrainStep::Script(script) if term => {
                        log::info!(
                            "TERM during the drain: stopping the job; the drain script may finish"
                        );
                        Some(LateDrain { script, deadline })
                    }
                    DrainStep::Script(script) => {
                        log::info!("STOP during the drain: killing the drain script");
                        acts.push(Action::Signal {
                            group: script.pid,
                            signal: Signal::SIGKILL,
                        });
                        self.drain = Drain::Cancelled;
                        None
                    }
                    DrainStep::Barrier { result, .. } => {
                        self.drain = result;
                        None
                    }
                    DrainStep::Launching | DrainStep::Pause { .. } => {
                        self.drain = Drain::Cancelled;
                        None
                    }
                };
                self.begin_stop(now, self.shutdown_then(), late, acts);
            }
            Phase::Stopping { then, drain, .. } => {
                *then = match *then {
                    Then::Stay | Then::Start => after_term,
                    exiting => exiting,
                };
                // A STOP ends a drain script that a TERM let run on.
                if !term && let Some(late) = drain.take() {
                    log::info!("STOP: killing the drain script");
                    acts.push(Action::Signal {
                        group: late.script.pid,
                        signal: Signal::SIGKILL,
                    });
                    self.drain = Drain::Cancelled;
                }
            }
        }
    }

    fn start_request(&mut self, acts: &mut Vec<Action>) {
        let exiting = match &mut self.phase {
            Phase::Draining { .. } => true,
            Phase::Stopping { then, .. } => match *then {
                Then::Stay | Then::Start => {
                    *then = Then::Start;
                    false
                }
                Then::Exit(_) | Then::ExitWithJob => true,
            },
            Phase::Stopped => {
                acts.push(Action::Spawn(Child::Main));
                false
            }
            Phase::Running { .. } => false,
        };
        if exiting {
            log::info!("START ignored: container-run is shutting down");
            acts.clear();
            return;
        }
        if self.hold {
            self.hold = false;
            acts.insert(0, Action::RemoveHold);
        }
    }

    fn shutdown(&mut self, now: Instant, acts: &mut Vec<Action>) {
        let then = self.shutdown_then();
        match &mut self.phase {
            Phase::Stopped => acts.push(Action::Exit(match then {
                Then::ExitWithJob => self.job_status(),
                _ => exit::OK,
            })),
            Phase::Running { main, since, hook } => {
                let (main, since, hook) = (*main, *since, *hook);
                let timeout = match self.cfg.drain {
                    DrainPlan::Off => return self.begin_stop(now, then, None, acts),
                    DrainPlan::Barrier { timeout } | DrainPlan::Script { timeout } => timeout,
                };
                // A running post-start is cancelled first, as a STOP does;
                // the final stop catches whatever of it is left.
                let hook_group = hook.group();
                if let Some(group) = hook_group {
                    for signal in [Signal::SIGTERM, Signal::SIGCONT] {
                        acts.push(Action::Signal { group, signal });
                    }
                }
                if hook != Hook::Idle {
                    self.post_start = PostStart::Cancelled;
                }
                let step = match self.cfg.drain {
                    DrainPlan::Script { .. } => {
                        log::info!("draining: running the drain script (deadline in {timeout:?})");
                        acts.push(Action::Spawn(Child::Drain(DrainCall::Shutdown)));
                        DrainStep::Launching
                    }
                    _ => {
                        acts.push(Action::AskPeers);
                        DrainStep::Barrier {
                            result: Drain::None,
                            next_check: None,
                            busy: 0,
                        }
                    }
                };
                self.phase = Phase::Draining {
                    main,
                    since,
                    signalled: now,
                    deadline: after(now, timeout),
                    hook_group,
                    step,
                };
            }
            Phase::Draining { deadline, .. } => {
                log::info!(
                    "already draining: {} left before the stop",
                    secs(deadline.saturating_duration_since(now))
                );
            }
            Phase::Stopping {
                then: pending,
                kill_at,
                ..
            } => {
                // A repeated signal neither restarts the timeout nor
                // replaces a crash status already recorded.
                if matches!(*pending, Then::Stay | Then::Start) {
                    *pending = then;
                }
                match kill_at {
                    Some(at) => log::info!(
                        "already stopping: SIGKILL in {}",
                        secs(at.saturating_duration_since(now))
                    ),
                    None => {
                        log::info!("already stopping: SIGKILL sent, waiting for the last processes")
                    }
                }
            }
        }
    }

    /// What a SIGTERM or SIGINT leads to once the job has stopped.
    fn shutdown_then(&self) -> Then {
        if self.cfg.errand {
            Then::ExitWithJob
        } else {
            Then::Exit(exit::OK)
        }
    }

    /// An errand's own status: 143 when it never ran (SPEC section 9).
    fn job_status(&self) -> u8 {
        self.last_exit
            .map_or(exit::ERRAND_NEVER_RAN, exit::from_wait)
    }

    /// Stop the job from `Running` or `Draining`.
    fn begin_stop(
        &mut self,
        now: Instant,
        then: Then,
        late: Option<LateDrain>,
        acts: &mut Vec<Action>,
    ) {
        let (main, since, helpers) = match self.phase {
            Phase::Running { main, since, hook } => {
                if hook != Hook::Idle && self.post_start != PostStart::Failed {
                    self.post_start = PostStart::Cancelled;
                }
                (Some(main), since, hook.group().into_iter().collect())
            }
            Phase::Draining {
                main,
                since,
                hook_group,
                ..
            } => (Some(main), since, hook_group.into_iter().collect()),
            // The job's exit during a drain: its group may still have members.
            Phase::Stopping { .. } | Phase::Stopped => return,
        };
        let group = main.unwrap_or_default();
        acts.push(Action::Terminate {
            job: group,
            helpers: Vec::clone(&helpers),
            signal: self.cfg.stop_signal,
            spare: late.as_ref().map(|l| l.script.pid),
        });
        self.phase = Phase::Stopping {
            main,
            since,
            group,
            helpers,
            kill_at: Some(after(now, self.cfg.stop_timeout)),
            then,
            drain: late,
        };
    }

    fn spawned(&mut self, now: Instant, child: Child, pid: Pid, acts: &mut Vec<Action>) {
        match (&mut self.phase, child) {
            (Phase::Stopped, Child::Main) => {
                self.starts += 1;
                let hook = self.begin_post_start(now, acts);
                self.phase = Phase::Running {
                    main: pid,
                    since: now,
                    hook,
                };
                acts.insert(0, Action::WriteRunFiles(pid));
            }
            (Phase::Running { hook, .. }, Child::Condition) => {
                if let Hook::Launching(deadline) = *hook {
                    *hook = Hook::Condition { pid, deadline };
                }
            }
            (Phase::Running { hook, .. }, Child::PostStart) => {
                if let Hook::Launching(deadline) = *hook {
                    *hook = Hook::PostStart { pid, deadline };
                    self.post_start = PostStart::Running;
                }
            }
            (Phase::Draining { step, .. }, Child::Drain(_)) if *step == DrainStep::Launching => {
                *step = DrainStep::Script(Script {
                    pid,
                    exit: None,
                    output: None,
                });
            }
            _ => {}
        }
    }

    fn begin_post_start(&mut self, now: Instant, acts: &mut Vec<Action>) -> Hook {
        let deadline = after(now, self.cfg.post_start_timeout);
        match self.cfg.post_start {
            PostStartPlan::None => return Hook::Idle,
            PostStartPlan::Direct => {
                self.post_start = PostStart::Running;
                acts.push(Action::Spawn(Child::PostStart));
            }
            PostStartPlan::AfterCondition => {
                self.post_start = PostStart::Pending;
                acts.push(Action::Spawn(Child::Condition));
            }
        }
        Hook::Launching(deadline)
    }

    fn spawn_failed(&mut self, now: Instant, child: Child, code: u8, acts: &mut Vec<Action>) {
        match (&mut self.phase, child) {
            (Phase::Stopped, Child::Main) => {
                self.last_exit = Some(Exit::Code(code));
                acts.push(Action::Exit(code));
            }
            (Phase::Running { hook, .. }, Child::Condition) => {
                if let Some(deadline) = hook.deadline() {
                    *hook = Hook::ConditionDue {
                        at: after(now, self.cfg.condition_interval),
                        deadline,
                    };
                }
            }
            (Phase::Running { .. }, Child::PostStart) => self.fail_post_start(now, acts),
            (Phase::Draining { .. }, Child::Drain(_)) => {
                self.enter_barrier(Drain::Failed, acts);
            }
            _ => {}
        }
    }

    fn missing(&mut self, child: Child, acts: &mut Vec<Action>) {
        match (&mut self.phase, child) {
            (Phase::Running { hook, .. }, Child::PostStart) => {
                *hook = Hook::Idle;
                self.post_start = PostStart::Skipped;
            }
            (Phase::Draining { .. }, Child::Drain(_)) => self.enter_barrier(Drain::Skipped, acts),
            _ => {}
        }
    }

    fn reaped(&mut self, now: Instant, pid: Pid, exit: Exit, acts: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Stopped => {}
            Phase::Running { main, hook, .. } => {
                if *main == pid {
                    self.last_exit = Some(exit);
                    self.main_ended(now, pid, exit, acts);
                } else if hook.group() == Some(pid) {
                    self.hook_ended(now, exit, acts);
                }
            }
            Phase::Draining { main, step, .. } => {
                if *main == pid {
                    self.last_exit = Some(exit);
                    log::info!("the job's process {pid} {exit} during the drain");
                    let (late, result) = match std::mem::replace(step, DrainStep::Launching) {
                        DrainStep::Script(script) => (Some(script), Drain::Cancelled),
                        // At the barrier the drain itself is over: keep its result.
                        DrainStep::Barrier { result, .. } => (None, result),
                        _ => (None, Drain::Cancelled),
                    };
                    let deadline = self.drain_deadline().unwrap_or(now);
                    self.drain = result;
                    let late = late.map(|script| LateDrain { script, deadline });
                    self.stop_after_exit(now, Then::Exit(exit::from_wait(exit)), late, acts);
                } else if let DrainStep::Script(script) = step
                    && script.pid == pid
                {
                    script.exit = Some(exit);
                    self.script_progress(now, acts);
                }
            }
            Phase::Stopping { main, drain, .. } => {
                if *main == Some(pid) {
                    *main = None;
                    self.last_exit = Some(exit);
                    log::info!("the job's process {pid} {exit}");
                } else if let Some(late) = drain
                    && late.script.pid == pid
                {
                    late.script.exit = Some(exit);
                    self.late_drain_progress(acts);
                }
            }
        }
    }

    /// The main process ended by itself while running.
    fn main_ended(&mut self, now: Instant, pid: Pid, exit: Exit, acts: &mut Vec<Action>) {
        let status = exit::from_wait(exit);
        let then = if self.cfg.errand {
            log::info!("errand process {pid} {exit}: exiting with {status} once its tree is gone");
            Then::Exit(status)
        } else if status == 0 {
            log::info!("process {pid} exited with status 0: stopped, waiting for START");
            Then::Stay
        } else {
            log::error!("process {pid} {exit}: stopping and exiting with {status}");
            Then::Exit(status)
        };
        self.stop_after_exit(now, then, None, acts);
    }

    /// Stop what is left of the tree once the job's process has exited.
    fn stop_after_exit(
        &mut self,
        now: Instant,
        then: Then,
        late: Option<LateDrain>,
        acts: &mut Vec<Action>,
    ) {
        self.begin_stop(now, then, late, acts);
        if let Phase::Stopping { main, .. } = &mut self.phase {
            *main = None;
        }
    }

    fn hook_ended(&mut self, now: Instant, exit: Exit, acts: &mut Vec<Action>) {
        let Phase::Running { hook, .. } = &mut self.phase else {
            return;
        };
        let Some(deadline) = hook.deadline() else {
            return;
        };
        match (*hook, exit) {
            (Hook::Condition { .. }, Exit::Code(0)) => {
                *hook = Hook::Launching(deadline);
                acts.push(Action::Spawn(Child::PostStart));
            }
            (Hook::Condition { .. }, _) => {
                log::debug!("post-start condition {exit}");
                *hook = Hook::ConditionDue {
                    at: after(now, self.cfg.condition_interval),
                    deadline,
                };
            }
            (_, Exit::Code(0)) => {
                *hook = Hook::Idle;
                self.post_start = PostStart::Done;
                log::info!("post-start done");
            }
            _ => {
                log::error!("post-start {exit}: stopping the job and exiting with 1");
                self.fail_post_start(now, acts);
            }
        }
    }

    fn fail_post_start(&mut self, now: Instant, acts: &mut Vec<Action>) {
        self.post_start = PostStart::Failed;
        self.begin_stop(now, Then::Exit(exit::FAILURE), None, acts);
    }

    fn drained(&mut self, children_left: bool, acts: &mut Vec<Action>) {
        let Phase::Stopping {
            then,
            kill_at,
            group,
            helpers,
            drain,
            ..
        } = &self.phase
        else {
            return;
        };
        if children_left {
            if kill_at.is_none() {
                // Orphans re-parented to container-run since the last sweep.
                acts.push(kill_tree(
                    *group,
                    helpers,
                    drain.as_ref().map(|l| l.script.pid),
                ));
            }
            return;
        }
        let then = *then;
        self.phase = Phase::Stopped;
        acts.push(Action::RemoveRunFiles);
        let how = self
            .last_exit
            .map_or_else(|| "never started".to_string(), |e| e.to_string());
        match then {
            Then::Stay => log::info!("stopped (the job's process {how})"),
            Then::Start => {
                log::info!("stopped (the job's process {how}); starting again");
                acts.push(Action::Spawn(Child::Main));
            }
            Then::Exit(code) => {
                log::info!("stopped (the job's process {how}); exiting with {code}");
                acts.push(Action::Exit(code));
            }
            Then::ExitWithJob => {
                let code = self.job_status();
                log::info!("stopped (the errand's process {how}); exiting with {code}");
                acts.push(Action::Exit(code));
            }
        }
    }

    fn drain_output(&mut self, now: Instant, out: Vec<u8>, acts: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Draining {
                step: DrainStep::Script(script),
                ..
            } => {
                script.output = Some(out);
                self.script_progress(now, acts);
            }
            Phase::Stopping {
                drain: Some(late), ..
            } => {
                late.script.output = Some(out);
                self.late_drain_progress(acts);
            }
            _ => {}
        }
    }

    /// Once a call's exit and output are both in: its verdict decides the
    /// next step of the drain.
    fn script_progress(&mut self, now: Instant, acts: &mut Vec<Action>) {
        let Phase::Draining { step, .. } = &mut self.phase else {
            return;
        };
        let DrainStep::Script(Script {
            exit: Some(exit),
            output: Some(output),
            ..
        }) = step
        else {
            return;
        };
        match drain::judge(*exit, output) {
            Ok(Verdict::WaitThenDone(wait)) if wait.is_zero() => {
                self.enter_barrier(Drain::Done, acts)
            }
            Ok(Verdict::WaitThenDone(wait)) => {
                log::info!("drain: waiting {wait:?} as the script asked");
                *step = DrainStep::Pause {
                    until: after(now, wait),
                    check: false,
                };
            }
            Ok(Verdict::WaitThenCheck(wait)) => {
                log::info!("drain: checking again in {wait:?}");
                *step = DrainStep::Pause {
                    until: after(now, wait),
                    check: true,
                };
            }
            Err(why) => {
                log::error!("drain failed: {why}; stopping the job");
                self.enter_barrier(Drain::Failed, acts);
            }
        }
    }

    /// A drain that finishes while the job stops: only its result is left
    /// to record (the job is gone, so no wait it asks for matters).
    fn late_drain_progress(&mut self, acts: &mut Vec<Action>) {
        let Phase::Stopping {
            drain,
            kill_at,
            group,
            helpers,
            ..
        } = &mut self.phase
        else {
            return;
        };
        let Some(LateDrain {
            script:
                Script {
                    pid,
                    exit: Some(exit),
                    output: Some(output),
                },
            ..
        }) = drain
        else {
            return;
        };
        let (pid, verdict) = (*pid, drain::judge(*exit, output));
        if self.drain != Drain::Cancelled {
            self.drain = match &verdict {
                Ok(_) => Drain::Done,
                Err(_) => Drain::Failed,
            };
        }
        match verdict {
            Ok(_) => log::info!("drain script finished"),
            Err(why) => log::error!("drain failed: {why}"),
        }
        *drain = None;
        // What the script left in its group is spared no longer: SIGTERM
        // now, or SIGKILL at once when the job's SIGKILL has gone out.
        if kill_at.is_some() {
            for signal in [Signal::SIGTERM, Signal::SIGCONT] {
                acts.push(Action::Signal { group: pid, signal });
            }
        } else {
            acts.push(kill_tree(*group, helpers, None));
        }
    }

    fn enter_barrier(&mut self, result: Drain, acts: &mut Vec<Action>) {
        if let Phase::Draining { step, .. } = &mut self.phase {
            log::info!(
                "drain {}; checking the pod's other container-runs",
                result.as_str()
            );
            *step = DrainStep::Barrier {
                result,
                next_check: None,
                busy: 0,
            };
            acts.push(Action::AskPeers);
        }
    }

    fn peers_answered(&mut self, now: Instant, peers: Peers, acts: &mut Vec<Action>) {
        let Phase::Draining {
            signalled,
            deadline,
            step:
                DrainStep::Barrier {
                    result,
                    next_check: next_check @ None,
                    busy,
                },
            ..
        } = &mut self.phase
        else {
            return;
        };
        let settling = now < *signalled + SETTLE;
        let waiting_for = peers.draining + if settling { peers.ready } else { 0 };
        if waiting_for == 0 {
            self.drain = *result;
            let then = self.shutdown_then();
            self.begin_stop(now, then, None, acts);
            return;
        }
        if waiting_for != *busy {
            log::info!(
                "waiting for {waiting_for} draining container-run(s) of the pod ({} left)",
                secs(deadline.saturating_duration_since(now))
            );
            *busy = waiting_for;
        }
        *next_check = Some(after(now, PEER_RECHECK).min(*deadline));
    }

    fn tick(&mut self, now: Instant, acts: &mut Vec<Action>) {
        let due = |t: Instant| t <= now;
        match &mut self.phase {
            Phase::Stopped => {}
            Phase::Running { hook, .. } => {
                if hook.deadline().is_some_and(due) {
                    log::error!(
                        "post-start did not finish within {:?}: stopping the job and exiting with 1",
                        self.cfg.post_start_timeout
                    );
                    self.fail_post_start(now, acts);
                } else if let Hook::ConditionDue { at, deadline } = *hook
                    && due(at)
                {
                    *hook = Hook::Launching(deadline);
                    acts.push(Action::Spawn(Child::Condition));
                }
            }
            Phase::Draining { deadline, step, .. } => {
                if due(*deadline) {
                    log::error!("drain did not finish within its deadline: stopping the job");
                    if let DrainStep::Script(script) = step {
                        acts.push(Action::Signal {
                            group: script.pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                    self.drain = Drain::TimedOut;
                    let then = self.shutdown_then();
                    self.begin_stop(now, then, None, acts);
                    return;
                }
                match step {
                    DrainStep::Pause { until, check } if due(*until) => {
                        if *check {
                            *step = DrainStep::Launching;
                            acts.push(Action::Spawn(Child::Drain(DrainCall::CheckStatus)));
                        } else {
                            self.enter_barrier(Drain::Done, acts);
                        }
                    }
                    DrainStep::Barrier {
                        next_check: next @ Some(_),
                        ..
                    } if next.is_some_and(due) => {
                        *next = None;
                        acts.push(Action::AskPeers);
                    }
                    _ => {}
                }
            }
            Phase::Stopping {
                kill_at,
                group,
                helpers,
                drain,
                ..
            } => {
                if let Some(late) = drain
                    && due(late.deadline)
                {
                    log::error!(
                        "drain did not finish within its deadline: killing its process group"
                    );
                    acts.push(Action::Signal {
                        group: late.script.pid,
                        signal: Signal::SIGKILL,
                    });
                    self.drain = Drain::TimedOut;
                    *drain = None;
                }
                if kill_at.is_some_and(due) {
                    *kill_at = None;
                    log::info!(
                        "stop timeout of {:?} reached: killing what is left",
                        self.cfg.stop_timeout
                    );
                    acts.push(kill_tree(
                        *group,
                        helpers,
                        drain.as_ref().map(|l| l.script.pid),
                    ));
                }
            }
        }
    }

    /// The earliest instant at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Stopped => None,
            Phase::Running { hook, .. } => match *hook {
                Hook::ConditionDue { at, deadline } => Some(at.min(deadline)),
                other => other.deadline(),
            },
            Phase::Draining { deadline, step, .. } => {
                let step_at = match step {
                    DrainStep::Pause { until, .. } => Some(*until),
                    DrainStep::Barrier { next_check, .. } => *next_check,
                    _ => None,
                };
                Some(step_at.map_or(*deadline, |t| t.min(*deadline)))
            }
            Phase::Stopping { kill_at, drain, .. } => {
                [*kill_at, drain.as_ref().map(|l| l.deadline)]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }

    fn drain_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Draining { deadline, .. } => Some(*deadline),
            Phase::Stopping {
                drain: Some(late), ..
            } => Some(late.deadline),
            _ => None,
        }
    }

    fn main_group(&self) -> Option<Pid> {
        match self.phase {
            Phase::Running { main, .. } | Phase::Draining { main, .. } => Some(main),
            Phase::Stopping { group, .. } => Some(group),
            Phase::Stopped => None,
        }
    }

    /// The groups QUIT reaches: the job's and a running post-start's.
    fn groups(&self) -> Vec<Pid> {
        match &self.phase {
            Phase::Running { main, hook, .. } => {
                std::iter::once(*main).chain(hook.group()).collect()
            }
            Phase::Draining { main, .. } => vec![*main],
            Phase::Stopping { group, helpers, .. } => std::iter::once(*group)
                .chain(helpers.iter().copied())
                .collect(),
            Phase::Stopped => Vec::new(),
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let (pid, since) = match &self.phase {
            Phase::Stopped => (None, None),
            Phase::Running { main, since, .. } | Phase::Draining { main, since, .. } => {
                (Some(*main), Some(*since))
            }
            Phase::Stopping { main, since, .. } => (*main, main.map(|_| *since)),
        };
        let state = self.state();
        let (pending_start, exiting) = match &self.phase {
            Phase::Draining { .. } => (false, true),
            Phase::Stopping { then, .. } => (
                *then == Then::Start,
                matches!(then, Then::Exit(_) | Then::ExitWithJob),
            ),
            _ => (false, false),
        };
        let drain = match &self.phase {
            Phase::Draining {
                step: DrainStep::Barrier { .. },
                ..
            } => Drain::Waiting,
            Phase::Draining { .. } | Phase::Stopping { drain: Some(_), .. } => Drain::Running,
            _ => self.drain,
        };
        Snapshot {
            state,
            pid,
            starts: self.starts,
            hold: self.hold,
            pending_start,
            exiting,
            post_start: self.post_start,
            uptime: since.map(|t| now.saturating_duration_since(t)),
            last_exit: self.last_exit.map(exit::from_wait),
            drain,
            drain_left: self
                .drain_deadline()
                .map(|d| d.saturating_duration_since(now)),
            stop_left: match self.phase {
                Phase::Stopping {
                    kill_at: Some(at), ..
                } => Some(at.saturating_duration_since(now)),
                _ => None,
            },
        }
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Stopped => State::Stopped,
            Phase::Running { .. } => State::Running,
            Phase::Draining { .. } => State::Draining,
            Phase::Stopping { .. } => State::Stopping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ControlCommand::*;

    const STOP_TIMEOUT: Duration = Duration::from_secs(20);
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
    const JOB: Pid = 10;

    fn cfg() -> MachineConfig {
        MachineConfig {
            stop_timeout: STOP_TIMEOUT,
            post_start_timeout: Duration::from_secs(60),
            condition_interval: Duration::from_secs(3),
            post_start: PostStartPlan::None,
            drain: DrainPlan::Off,
            errand: false,
            stop_signal: Signal::SIGTERM,
        }
    }

    fn reaped(pid: Pid, exit: Exit) -> Event {
        Event::Reaped { pid, exit }
    }
    fn drained(children_left: bool) -> Event {
        Event::Drained { children_left }
    }
    fn code(c: u8) -> Exit {
        Exit::Code(c)
    }
    fn killed(s: u8) -> Exit {
        Exit::Signal(s)
    }
    fn terminate(signal: Signal, helpers: &[Pid], spare: Option<Pid>) -> Action {
        Action::Terminate {
            job: JOB,
            helpers: helpers.to_vec(),
            signal,
            spare,
        }
    }
    fn term() -> Action {
        terminate(Signal::SIGTERM, &[], None)
    }
    fn signal(group: Pid, signal: Signal) -> Action {
        Action::Signal { group, signal }
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A machine built from `cfg` with the main process running as `JOB`.
    fn running_with(cfg: MachineConfig) -> (Machine, Instant) {
        let mut m = Machine::new(cfg, false);
        let t = Instant::now();
        assert_eq!(m.step(t, Event::Boot), [Action::Spawn(Child::Main)]);
        let first = m.step(t, Event::Spawned(Child::Main, JOB));
        assert_eq!(first[0], Action::WriteRunFiles(JOB));
        assert_eq!(m.state(), State::Running);
        (m, t)
    }
    fn running() -> (Machine, Instant) {
        running_with(cfg())
    }

    /// The job's process ends after the stop signal, and nothing is left.
    fn finish_stop(m: &mut Machine, t: Instant) -> Vec<Action> {
        m.step(t, reaped(JOB, killed(15)));
        m.step(t, drained(false))
    }

    #[test]
    fn stop_then_tree_empty_reaches_stopped() {
        let (mut m, t) = running();
        assert_eq!(m.step(t, Event::Command(Stop)), [term(), Action::WriteHold]);
        assert_eq!(m.state(), State::Stopping);
        assert!(m.snapshot(t).hold);
        assert_eq!(m.step(t, reaped(JOB, killed(15))), []);
        assert_eq!(m.snapshot(t).pid, None);
        // Files stay until nothing is left.
        assert_eq!(m.step(t, drained(true)), []);
        assert_eq!(m.state(), State::Stopping);
        assert_eq!(m.step(t, drained(false)), [Action::RemoveRunFiles]);
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.snapshot(t).last_exit, Some(143));
    }

    #[test]
    fn term_is_a_stop_without_hold_and_stop_when_stopped_still_holds() {
        let (mut m, t) = running();
        assert_eq!(m.step(t, Event::Command(Term)), [term()]);
        assert!(!m.snapshot(t).hold);
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(m.step(t, Event::Command(Stop)), [Action::WriteHold]);
        assert_eq!(m.step(t, Event::Command(Term)), []);
        assert!(m.snapshot(t).hold);
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn start_removes_the_hold_and_spawns_and_a_held_boot_stays_stopped() {
        let mut m = Machine::new(cfg(), true);
        let t = Instant::now();
        assert_eq!(m.step(t, Event::Boot), []);
        assert_eq!(
            m.step(t, Event::Command(Start)),
            [Action::RemoveHold, Action::Spawn(Child::Main)]
        );
        assert_eq!(
            m.step(t, Event::Spawned(Child::Main, JOB)),
            [Action::WriteRunFiles(JOB)]
        );
        assert_eq!(m.step(t, Event::Command(Start)), []);
        assert_eq!(m.snapshot(t).starts, 1);
    }

    #[test]
    fn the_last_command_of_a_burst_wins() {
        let (mut m, t) = running();
        m.step(t, Event::Command(Stop));
        assert_eq!(m.step(t, Event::Command(Start)), [Action::RemoveHold]);
        assert!(m.snapshot(t).pending_start);
        assert_eq!(m.step(t, Event::Command(Term)), []);
        assert!(!m.snapshot(t).pending_start);
        m.step(t, Event::Command(Start));
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Spawn(Child::Main)]
        );
        m.step(t, Event::Spawned(Child::Main, 11));
        assert_eq!(m.state(), State::Running);
        assert_eq!(m.snapshot(t).starts, 2);
    }

    #[test]
    fn stop_timeout_kills_the_tree_then_sweeps_orphans_at_each_reap() {
        let (mut m, t) = running();
        m.step(t, Event::Command(Term));
        let kill_at = t + STOP_TIMEOUT;
        assert_eq!(m.next_deadline(), Some(kill_at));
        assert_eq!(m.step(kill_at - secs(1), Event::Tick), []);
        // Before the timeout, a reap with children left is just waited out.
        assert_eq!(m.step(t, drained(true)), []);
        let kill = Action::KillTree {
            groups: vec![JOB],
            spare: None,
        };
        assert_eq!(m.step(kill_at, Event::Tick), std::slice::from_ref(&kill));
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.step(kill_at, reaped(JOB, killed(9))), []);
        assert_eq!(m.step(kill_at, drained(true)), [kill]);
        assert_eq!(m.step(kill_at, drained(false)), [Action::RemoveRunFiles]);
        assert_eq!(m.snapshot(t).last_exit, Some(137));
    }

    #[test]
    fn main_exit_zero_stays_up_and_a_crash_exits_with_its_status() {
        let (mut m, t) = running();
        assert_eq!(m.step(t, reaped(JOB, code(0))), [term()]);
        assert_eq!(m.step(t, drained(false)), [Action::RemoveRunFiles]);
        assert_eq!(m.state(), State::Stopped);

        let (mut m, t) = running();
        assert_eq!(m.step(t, reaped(JOB, code(3))), [term()]);
        assert!(m.snapshot(t).exiting);
        // A START while exiting is ignored; a SIGTERM keeps the status.
        assert_eq!(m.step(t, Event::Command(Start)), []);
        assert_eq!(m.step(t, Event::Shutdown), []);
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(3)]
        );

        let (mut m, t) = running();
        m.step(t, reaped(JOB, killed(9)));
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(137)]
        );
    }

    #[test]
    fn shutdown_stops_then_exits_zero_and_a_repeat_keeps_the_deadline() {
        let (mut m, t) = running();
        assert_eq!(m.step(t, Event::Shutdown), [term()]);
        let later = t + secs(5);
        assert_eq!(m.step(later, Event::Shutdown), []);
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );

        let mut m = Machine::new(cfg(), true);
        m.step(t, Event::Boot);
        assert_eq!(m.step(t, Event::Shutdown), [Action::Exit(0)]);
    }

    #[test]
    fn spawn_failure_exits_with_its_code() {
        let mut m = Machine::new(cfg(), false);
        let t = Instant::now();
        m.step(t, Event::Boot);
        assert_eq!(
            m.step(t, Event::SpawnFailed(Child::Main, 126)),
            [Action::Exit(126)]
        );
    }

    #[test]
    fn signals_reach_the_main_group_while_it_exists_and_orphans_change_nothing() {
        let (mut m, t) = running();
        assert_eq!(
            m.step(t, Event::Forward(Signal::SIGHUP)),
            [signal(JOB, Signal::SIGHUP)]
        );
        assert_eq!(m.step(t, reaped(99, code(0))), []);
        assert_eq!(m.step(t, drained(true)), []);
        assert_eq!(m.state(), State::Running);
        m.step(t, Event::Command(Term));
        m.step(t, reaped(JOB, killed(15)));
        // The group may outlive its leader.
        assert_eq!(
            m.step(t, Event::Forward(Signal::SIGUSR1)),
            [signal(JOB, Signal::SIGUSR1)]
        );
        m.step(t, drained(false));
        assert_eq!(m.step(t, Event::Forward(Signal::SIGUSR1)), []);
        assert_eq!(m.step(t, Event::Command(Quit)), []);
    }

    #[test]
    fn post_start_after_a_condition_that_fails_twice() {
        let (mut m, t) = running_with(MachineConfig {
            post_start: PostStartPlan::AfterCondition,
            ..cfg()
        });
        assert_eq!(m.snapshot(t).post_start, PostStart::Pending);
        m.step(t, Event::Spawned(Child::Condition, 20));
        assert_eq!(m.step(t, reaped(20, code(1))), []);
        let retry = t + secs(3);
        assert_eq!(m.next_deadline(), Some(retry));
        assert_eq!(
            m.step(retry, Event::Tick),
            [Action::Spawn(Child::Condition)]
        );
        assert_eq!(m.step(retry, Event::SpawnFailed(Child::Condition, 127)), []);
        let retry = retry + secs(3);
        assert_eq!(
            m.step(retry, Event::Tick),
            [Action::Spawn(Child::Condition)]
        );
        m.step(retry, Event::Spawned(Child::Condition, 21));
        assert_eq!(
            m.step(retry, reaped(21, code(0))),
            [Action::Spawn(Child::PostStart)]
        );
        m.step(retry, Event::Spawned(Child::PostStart, 22));
        assert_eq!(m.snapshot(t).post_start, PostStart::Running);
        assert_eq!(
            m.step(retry, Event::Command(Quit)),
            [signal(JOB, Signal::SIGQUIT), signal(22, Signal::SIGQUIT)]
        );
        assert_eq!(m.step(retry, reaped(22, code(0))), []);
        assert_eq!(m.snapshot(t).post_start, PostStart::Done);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_failed_or_late_post_start_stops_the_job_and_exits_one() {
        let direct = MachineConfig {
            post_start: PostStartPlan::Direct,
            ..cfg()
        };
        let (mut m, t) = running_with(direct);
        m.step(t, Event::Spawned(Child::PostStart, 20));
        // Its group may have members left: the stop reaches them too.
        assert_eq!(
            m.step(t, reaped(20, code(2))),
            [terminate(Signal::SIGTERM, &[20], None)]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Failed);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(1)]
        );

        let (mut m, t) = running_with(direct);
        m.step(t, Event::Spawned(Child::PostStart, 20));
        let late = t + secs(60);
        assert_eq!(m.next_deadline(), Some(late));
        assert_eq!(
            m.step(late, Event::Tick),
            [terminate(Signal::SIGTERM, &[20], None)]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Failed);
    }

    #[test]
    fn stop_cancels_a_post_start_without_failure_and_start_runs_it_again() {
        let (mut m, t) = running_with(MachineConfig {
            post_start: PostStartPlan::Direct,
            ..cfg()
        });
        m.step(t, Event::Spawned(Child::PostStart, 20));
        assert_eq!(
            m.step(t, Event::Command(Stop)),
            [terminate(Signal::SIGTERM, &[20], None), Action::WriteHold]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Cancelled);
        m.step(t, reaped(20, killed(15)));
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(m.next_deadline(), None);
        m.step(t, Event::Command(Start));
        assert_eq!(
            m.step(t, Event::Spawned(Child::Main, 11)),
            [Action::WriteRunFiles(11), Action::Spawn(Child::PostStart)]
        );
        assert_eq!(m.step(t, Event::Missing(Child::PostStart)), []);
        assert_eq!(m.snapshot(t).post_start, PostStart::Skipped);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn the_stop_signal_goes_to_the_job_and_sigterm_to_the_helpers() {
        let (mut m, t) = running_with(MachineConfig {
            post_start: PostStartPlan::Direct,
            stop_signal: Signal::SIGINT,
            ..cfg()
        });
        m.step(t, Event::Spawned(Child::PostStart, 20));
        assert_eq!(
            m.step(t, Event::Command(Term)),
            [terminate(Signal::SIGINT, &[20], None)]
        );
    }

    #[test]
    fn an_errand_ends_with_its_own_status() {
        let errand = MachineConfig {
            errand: true,
            ..cfg()
        };
        for status in [0, 3] {
            let (mut m, t) = running_with(errand);
            assert_eq!(m.step(t, reaped(JOB, code(status))), [term()]);
            assert_eq!(
                m.step(t, drained(false)),
                [Action::RemoveRunFiles, Action::Exit(status)]
            );
        }
        // SIGTERM (and TERM): the errand's status, 143 when SIGTERM killed it.
        for ask in [Event::Shutdown, Event::Command(Term)] {
            let (mut m, t) = running_with(errand);
            assert_eq!(m.step(t, ask), [term()]);
            assert_eq!(
                finish_stop(&mut m, t),
                [Action::RemoveRunFiles, Action::Exit(143)]
            );
        }
        // An errand that handles SIGTERM and exits 0 has succeeded.
        let (mut m, t) = running_with(errand);
        m.step(t, Event::Shutdown);
        m.step(t, reaped(JOB, code(0)));
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
        // STOP holds it; told to end when it never ran: 143.
        let mut m = Machine::new(errand, true);
        m.step(t, Event::Boot);
        assert_eq!(m.step(t, Event::Command(Term)), [Action::Exit(143)]);
        let (mut m, t) = running_with(errand);
        m.step(t, Event::Command(Stop));
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(m.step(t, Event::Shutdown), [Action::Exit(143)]);
    }

    #[test]
    fn a_hold_that_could_not_be_written_is_not_reported() {
        let (mut m, t) = running();
        m.step(t, Event::Command(Stop));
        assert_eq!(m.step(t, Event::HoldNotWritten), []);
        assert!(!m.snapshot(t).hold);
    }

    // --- drain and barrier (SPEC section 8) ---

    const DRAIN: Pid = 30;

    fn draining() -> (Machine, Instant) {
        let (mut m, t) = running_with(MachineConfig {
            drain: DrainPlan::Script {
                timeout: DRAIN_TIMEOUT,
            },
            ..cfg()
        });
        assert_eq!(m.snapshot(t).drain, Drain::Ready);
        assert_eq!(
            m.step(t, Event::Shutdown),
            [Action::Spawn(Child::Drain(DrainCall::Shutdown))]
        );
        assert_eq!(m.state(), State::Draining);
        assert_eq!(
            m.step(t, Event::Spawned(Child::Drain(DrainCall::Shutdown), DRAIN)),
            []
        );
        (m, t)
    }

    /// The drain call `pid` ends with `exit` and prints `out`.
    fn call_ends(m: &mut Machine, t: Instant, pid: Pid, exit: Exit, out: &str) -> Vec<Action> {
        let mut acts = m.step(t, reaped(pid, exit));
        acts.extend(m.step(t, Event::DrainOutput(out.as_bytes().to_vec())));
        acts
    }

    fn no_peers(m: &mut Machine, t: Instant) -> Vec<Action> {
        m.step(t, Event::PeersAnswered(Peers::default()))
    }

    #[test]
    fn a_static_drain_waits_then_the_job_stops() {
        let (mut m, t) = draining();
        let s = m.snapshot(t);
        assert_eq!((s.state, s.drain), (State::Draining, Drain::Running));
        assert_eq!(s.drain_left, Some(DRAIN_TIMEOUT));
        assert!(s.exiting && s.pid == Some(JOB));
        assert_eq!(call_ends(&mut m, t, DRAIN, code(0), "1\n"), []);
        let done = t + secs(1);
        assert_eq!(m.next_deadline(), Some(done));
        assert_eq!(m.step(done, Event::Tick), [Action::AskPeers]);
        assert_eq!(m.snapshot(t).drain, Drain::Waiting);
        assert_eq!(no_peers(&mut m, done), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn a_dynamic_drain_checks_status_until_it_prints_zero() {
        let (mut m, t) = draining();
        let mut now = t;
        let mut pid = DRAIN;
        for _ in 0..3 {
            assert_eq!(call_ends(&mut m, now, pid, code(0), "-1"), []);
            now += secs(1);
            assert_eq!(
                m.step(now, Event::Tick),
                [Action::Spawn(Child::Drain(DrainCall::CheckStatus))]
            );
            pid += 1;
            m.step(
                now,
                Event::Spawned(Child::Drain(DrainCall::CheckStatus), pid),
            );
        }
        // The output may come before the exit.
        assert_eq!(m.step(now, Event::DrainOutput(b"0\n".to_vec())), []);
        assert_eq!(m.step(now, reaped(pid, code(0))), [Action::AskPeers]);
    }

    #[test]
    fn a_failed_missing_or_late_drain_never_blocks_the_stop() {
        for (exit, out) in [(code(0), "garbage"), (code(1), "0"), (killed(9), "")] {
            let (mut m, t) = draining();
            assert_eq!(call_ends(&mut m, t, DRAIN, exit, out), [Action::AskPeers]);
            assert_eq!(no_peers(&mut m, t), [term()]);
            assert_eq!(m.snapshot(t).drain, Drain::Failed);
        }
        let (mut m, t) = running_with(MachineConfig {
            drain: DrainPlan::Script {
                timeout: DRAIN_TIMEOUT,
            },
            ..cfg()
        });
        m.step(t, Event::Shutdown);
        assert_eq!(
            m.step(t, Event::Missing(Child::Drain(DrainCall::Shutdown))),
            [Action::AskPeers]
        );
        assert_eq!(no_peers(&mut m, t), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::Skipped);

        let (mut m, t) = draining();
        let end = t + DRAIN_TIMEOUT;
        assert_eq!(m.next_deadline(), Some(end));
        assert_eq!(
            m.step(end, Event::Tick),
            [signal(DRAIN, Signal::SIGKILL), term()]
        );
        assert_eq!(m.snapshot(t).drain, Drain::TimedOut);
    }

    #[test]
    fn stop_ends_a_drain_at_once_and_term_lets_its_script_finish() {
        let (mut m, t) = draining();
        assert_eq!(
            m.step(t, Event::Command(Stop)),
            [signal(DRAIN, Signal::SIGKILL), term(), Action::WriteHold]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Cancelled);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );

        let (mut m, t) = draining();
        assert_eq!(
            m.step(t, Event::Command(Term)),
            [terminate(Signal::SIGTERM, &[], Some(DRAIN))]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Running);
        m.step(t, reaped(JOB, killed(15)));
        // The stop waits for the script, and its SIGKILL spares it.
        assert_eq!(m.step(t, drained(true)), []);
        let kill_at = t + STOP_TIMEOUT;
        let kill = |spare| Action::KillTree {
            groups: vec![JOB],
            spare,
        };
        assert_eq!(m.step(kill_at, Event::Tick), [kill(Some(DRAIN))]);
        assert_eq!(m.step(kill_at, drained(true)), [kill(Some(DRAIN))]);
        // The loop's order: the script is reaped, then the reap is drained,
        // then its output is read. Once it is judged, what it left in its
        // group is killed at once: nothing may outlive the stop timeout.
        assert_eq!(m.step(kill_at, reaped(DRAIN, code(0))), []);
        assert_eq!(m.step(kill_at, drained(true)), [kill(Some(DRAIN))]);
        assert_eq!(
            m.step(kill_at, Event::DrainOutput(b"5".to_vec())),
            [kill(None)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.step(kill_at, drained(true)), [kill(None)]);
        assert_eq!(
            m.step(kill_at, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );

        // Before the stop timeout, what the script left gets SIGTERM.
        let (mut m, t) = draining();
        m.step(t, Event::Command(Term));
        m.step(t, reaped(JOB, killed(15)));
        assert_eq!(
            call_ends(&mut m, t, DRAIN, code(0), "garbage"),
            [
                signal(DRAIN, Signal::SIGTERM),
                signal(DRAIN, Signal::SIGCONT)
            ]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Failed);
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));

        // A STOP after the TERM ends the script at once.
        let (mut m, t) = draining();
        m.step(t, Event::Command(Term));
        assert_eq!(
            m.step(t, Event::Command(Stop)),
            [signal(DRAIN, Signal::SIGKILL), Action::WriteHold]
        );
        let s = m.snapshot(t);
        assert_eq!(
            (s.drain, s.hold, s.drain_left),
            (Drain::Cancelled, true, None)
        );
    }

    #[test]
    fn during_a_drain_start_is_ignored_and_a_second_sigterm_changes_nothing() {
        let (mut m, t) = draining();
        assert_eq!(m.step(t, Event::Command(Start)), []);
        assert_eq!(m.step(t + secs(3), Event::Shutdown), []);
        assert_eq!(m.next_deadline(), Some(t + DRAIN_TIMEOUT));
        assert_eq!(
            m.step(t, Event::Forward(Signal::SIGHUP)),
            [signal(JOB, Signal::SIGHUP)]
        );
    }

    #[test]
    fn the_jobs_exit_ends_the_drain_and_container_run_exits_with_its_status() {
        let (mut m, t) = draining();
        assert_eq!(call_ends(&mut m, t, DRAIN, code(0), "30"), []);
        assert_eq!(m.step(t, reaped(JOB, code(4))), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::Cancelled);
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(4)]
        );

        // A running script may finish first.
        let (mut m, t) = draining();
        assert_eq!(
            m.step(t, reaped(JOB, code(0))),
            [terminate(Signal::SIGTERM, &[], Some(DRAIN))]
        );
        assert_eq!(m.step(t, drained(true)), []);
        call_ends(&mut m, t, DRAIN, code(0), "0");
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn the_jobs_exit_at_the_barrier_keeps_the_drains_result() {
        let (mut m, t) = draining();
        assert_eq!(
            call_ends(&mut m, t, DRAIN, code(0), "0"),
            [Action::AskPeers]
        );
        m.step(
            t,
            Event::PeersAnswered(Peers {
                draining: 1,
                ready: 0,
            }),
        );
        assert_eq!(m.step(t, reaped(JOB, code(0))), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(
            m.step(t, drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn the_barrier_waits_for_draining_peers_and_for_ready_ones_while_settling() {
        let (mut m, t) = running_with(MachineConfig {
            drain: DrainPlan::Barrier {
                timeout: DRAIN_TIMEOUT,
            },
            ..cfg()
        });
        assert_eq!(m.step(t, Event::Shutdown), [Action::AskPeers]);
        assert_eq!(m.snapshot(t).drain, Drain::Waiting);
        let busy = |draining, ready| Event::PeersAnswered(Peers { draining, ready });
        // A peer whose SIGTERM may be on its way.
        assert_eq!(m.step(t, busy(0, 1)), []);
        let next = t + PEER_RECHECK;
        assert_eq!(m.next_deadline(), Some(next));
        assert_eq!(m.step(next, Event::Tick), [Action::AskPeers]);
        // Its drain started: waited for past the settling window.
        assert_eq!(m.step(next, busy(1, 0)), []);
        let late = t + SETTLE + secs(1);
        assert_eq!(m.step(late, Event::Tick), [Action::AskPeers]);
        assert_eq!(m.step(late, busy(1, 0)), []);
        // A peer still ready after the window runs on: no wait for it.
        assert_eq!(m.step(late + PEER_RECHECK, Event::Tick), [Action::AskPeers]);
        assert_eq!(m.step(late + PEER_RECHECK, busy(0, 1)), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::None);
    }

    #[test]
    fn the_barrier_never_outlasts_the_drain_deadline() {
        let (mut m, t) = draining();
        call_ends(&mut m, t, DRAIN, code(0), "0");
        let busy = Event::PeersAnswered(Peers {
            draining: 1,
            ready: 0,
        });
        let near = t + DRAIN_TIMEOUT - Duration::from_millis(100);
        m.step(near, busy);
        assert_eq!(m.next_deadline(), Some(t + DRAIN_TIMEOUT));
        assert_eq!(m.step(t + DRAIN_TIMEOUT, Event::Tick), [term()]);
        assert_eq!(m.snapshot(t).drain, Drain::TimedOut);
    }

    #[test]
    fn a_drain_cancels_a_running_post_start_first() {
        let (mut m, t) = running_with(MachineConfig {
            post_start: PostStartPlan::Direct,
            drain: DrainPlan::Script {
                timeout: DRAIN_TIMEOUT,
            },
            ..cfg()
        });
        m.step(t, Event::Spawned(Child::PostStart, 20));
        assert_eq!(
            m.step(t, Event::Shutdown),
            [
                signal(20, Signal::SIGTERM),
                signal(20, Signal::SIGCONT),
                Action::Spawn(Child::Drain(DrainCall::Shutdown))
            ]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Cancelled);
        m.step(t, Event::Spawned(Child::Drain(DrainCall::Shutdown), DRAIN));
        call_ends(&mut m, t, DRAIN, code(0), "0");
        // The final stop still reaches what is left of the post-start.
        assert_eq!(
            no_peers(&mut m, t),
            [terminate(Signal::SIGTERM, &[20], None)]
        );
    }

    #[test]
    fn stop_and_term_never_drain() {
        for cmd in [Stop, Term] {
            let (mut m, t) = running_with(MachineConfig {
                drain: DrainPlan::Script {
                    timeout: DRAIN_TIMEOUT,
                },
                ..cfg()
            });
            assert_eq!(m.step(t, Event::Command(cmd))[0], term());
            assert_eq!(m.snapshot(t).drain, Drain::Ready);
        }
    }
}
