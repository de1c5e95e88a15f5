//! The supervisor's state machine (SPEC sections 4, 5, 8 and 9), pure: it
//! makes no system call and writes no log line. Three regions, in the
//! manner of s6-supervise's table:
//! - the job's phase, here: stopped, running, draining, stopping (the
//!   protocol's `State`), with, while stopping, its `Stop`: `Then`, what
//!   follows the stop, and when SIGKILL is due;
//! - the post-start (`hook`): its status, its running group, its deadline;
//! - the drain and the barrier (`drain`): the script, its waits, the
//!   barrier, one deadline.
//!
//! `Machine::step` is one `match (phase, event)` with every pair written
//! out (an ignored pair says `nop`). The rules that cross regions follow
//! it: each region returns its actions, and `with_hook`/`with_drain` read
//! the region's status afterwards (a failed post-start stops the job; a
//! drain that is over ends the `draining` phase; a detached drain script
//! that is over releases its group). `next_deadline` is the one place that
//! says which deadline comes next. A line worth logging travels as
//! `Action::Log`; the loop writes it.
//!
//! Invariants (the property test at the end drives random events at it):
//! - after any sequence of commands the state reached is the one the last
//!   command asked for (a START during a stop is `Then::Start`, a later
//!   STOP or TERM replaces it), unless container-run is exiting;
//! - `Stopped` only once no process of the tree is left; the run files exist
//!   exactly while the phase is not `Stopped`;
//! - every wait has a deadline (a stop's SIGKILL, the hook's, the drain's),
//!   and `next_deadline` is the earliest of them;
//! - no action names a process group whose leader was reaped (the pid may be
//!   someone else's by then): what is left of such a group is found through
//!   the tree;
//! - a stop's first signal comes before anything else it causes (the loop
//!   writes the command's log line after it, then the marker).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::exit::{self, Exit};
use crate::protocol::{ControlCommand, Drain, PostStart, State};
use crate::tree::Pid;

/// A line for the log as an action, `say!(Info: "...", ...)`: the machine
/// says it, the loop writes it.
macro_rules! say {
    ($level:ident: $($text:tt)+) => {
        Action::Log(log::Level::$level, format!($($text)+))
    };
}

pub mod drain;
pub mod hook;

use drain::{DrainCall, DrainPlan, Drainer};
use hook::{Hook, PostStartPlan};

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

/// What became of a `Spawn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Pid(Pid),
    /// It exists but could not be executed; the code says why.
    Failed(u8),
    /// The post-start or drain command does not exist: skipped.
    Missing,
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
    Shutdown(Signal),
    /// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH: for the main group.
    Forward(Signal),
    Spawned(Child, Started),
    /// A child of container-run (its pid) ended.
    Reaped(Pid, Exit),
    /// All exited children are reaped; whether any process of the tree is
    /// still alive.
    Drained(bool),
    /// The drain script's stdout, read to its end.
    DrainOutput(Vec<u8>),
    /// A round of STATUS to the pod's other container-runs is complete.
    PeersAnswered(Peers),
    /// The STOP marker could not be written, and none is there: the hold
    /// will not survive a container restart.
    HoldNotWritten,
    /// Time passed; due deadlines fire.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn(Child),
    /// A signal to a process group whose leader lives.
    Signal(Pid, Signal),
    /// The start of a stop, before anything else: the signal to the job's
    /// group, SIGTERM to the hook's, then SIGCONT to each (a process stopped
    /// with SIGSTOP must act on it); each group while its leader lives.
    Terminate(Option<Pid>, Option<Pid>, Signal),
    /// At the exit of the job's process, through the tree: the signal to
    /// what is left of the job's group, SIGTERM to every other descendant,
    /// SIGCONT to all, except the groups listed (the stop reached them) and
    /// the one spared (a detached drain script).
    Sweep(Pid, Signal, Vec<Pid>, Option<Pid>),
    /// A signal to what is left, found through the tree, of a group whose
    /// leader was reaped.
    SignalMembers(Pid, Signal),
    /// SIGKILL to the groups (whose leaders live) and to every process left
    /// of the tree, except the group spared (a detached drain script
    /// allowed to finish).
    KillTree(Vec<Pid>, Option<Pid>),
    /// Start a round of STATUS to the pod's other container-runs.
    AskPeers,
    WriteRunFiles(Pid),
    RemoveRunFiles,
    WriteHold,
    RemoveHold,
    /// A line for the log, said by the machine, written by the loop.
    Log(log::Level, String),
    Exit(u8),
}

/// What a step of the machine asks the loop to do, in order.
pub type Actions = Vec<Action>;

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

/// What a stop carries, from its first signal until nothing is left.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stop {
    then: Then,
    /// When SIGKILL is due; `None` once it went out.
    kill_at: Option<Instant>,
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
    /// The job's phase: `stopped`, `running`, `draining` (after a SIGTERM,
    /// while the drain or the barrier holds the stop), `stopping`.
    phase: State,
    /// While (and only while) `stopping`: what the stop carries.
    stop: Option<Stop>,
    /// The job's process while it lives (`running`, `draining`, and
    /// `stopping` until it is reaped), and when it started.
    job: Option<(Pid, Instant)>,
    hook: Hook,
    drain: Drainer,
    /// An operator's STOP is in force (the marker exists).
    hold: bool,
    starts: u64,
    last_exit: Option<Exit>,
}

/// `now + d`, or a time beyond any deadline when that does not fit the clock.
fn after(now: Instant, d: Duration) -> Instant {
    let never = now + Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d).unwrap_or(never)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// An ignored pair of the table.
fn nop() -> Actions {
    Vec::new()
}

fn start_ignored() -> Actions {
    vec![say!(Info: "START ignored: container-run is shutting down")]
}

impl Machine {
    /// `hold` says whether the STOP marker was found.
    pub fn new(cfg: MachineConfig, hold: bool) -> Machine {
        let (timeout, interval) = (cfg.post_start_timeout, cfg.condition_interval);
        Machine {
            hook: Hook::new(cfg.post_start, timeout, interval),
            drain: Drainer::new(cfg.drain),
            cfg,
            phase: State::Stopped,
            stop: None,
            job: None,
            hold,
            starts: 0,
            last_exit: None,
        }
    }

    /// The table: every (phase, event) pair, each a named step or `nop`.
    pub fn step(&mut self, now: Instant, event: Event) -> Actions {
        use Child::{Condition as Cond, Drain as DrainScript, Main, PostStart as Post};
        use ControlCommand::{Quit, Start, Status, Stop, Term};
        use Event::*;
        use State::{Draining, Running, Stopped, Stopping};
        match (self.phase, event) {
            (Stopped, Boot) => self.boot(),
            (Running | Draining | Stopping, Boot) => nop(),
            (Stopped, Command(Start)) => [self.unhold(), vec![Action::Spawn(Main)]].concat(),
            (Running, Command(Start)) => self.unhold(),
            (Draining, Command(Start)) => start_ignored(),
            (Stopping, Command(Start)) => self.stop_again(Then::Start),
            (Stopped, Command(Stop)) => self.hold(),
            (Running, Command(Stop)) => [self.stop_job(now, Then::Stay), self.hold()].concat(),
            (Draining, Command(Stop)) => self.stop_the_drain(now),
            (Stopping, Command(Stop)) => self.stop_while_stopping(),
            (Stopped, Command(Term)) => self.end(self.errand_or(Then::Stay)),
            (Running, Command(Term)) => self.stop_job(now, self.errand_or(Then::Stay)),
            (Draining, Command(Term)) => self.term_the_drain(now),
            (Stopping, Command(Term)) => self.stop_again(self.errand_or(Then::Stay)),
            (Stopped, Command(Quit)) => nop(),
            (Running | Draining | Stopping, Command(Quit)) => self.signal(Signal::SIGQUIT, true),
            (Stopped | Running | Draining | Stopping, Command(Status)) => nop(),
            (Stopped, Shutdown(_)) => self.end(self.shutdown_then()),
            (Running, Shutdown(_)) => self.shutdown(now),
            (Draining, Shutdown(_)) => self.again(now),
            (Stopping, Shutdown(_)) => self.again(now),
            (Stopped, Forward(_)) => nop(),
            (Running | Draining | Stopping, Forward(sig)) => self.signal(sig, false),
            (Stopped, Spawned(Main, started)) => self.main_started(now, started),
            (Running | Draining | Stopping, Spawned(Main, _)) => nop(),
            (Running, Spawned(Cond | Post, s)) => self.with_hook(now, |h| h.started(now, s)),
            (Stopped | Draining | Stopping, Spawned(Cond | Post, _)) => nop(),
            (Draining, Spawned(DrainScript(_), s)) => self.with_drain(now, |d| d.started(s)),
            (Stopped | Running | Stopping, Spawned(DrainScript(_), _)) => nop(),
            (Stopped, Reaped(..)) => nop(),
            (Running | Draining | Stopping, Reaped(pid, exit)) => self.reaped(now, pid, exit),
            (Stopping, Drained(children_left)) => self.drained(children_left),
            (Stopped | Running | Draining, Drained(_)) => nop(),
            (Draining | Stopping, DrainOutput(out)) => {
                self.with_drain(now, |d| d.ended(now, None, Some(out)))
            }
            (Stopped | Running, DrainOutput(_)) => nop(),
            (Draining, PeersAnswered(peers)) => self.with_drain(now, |d| d.peers(now, peers)),
            (Stopped | Running | Stopping, PeersAnswered(_)) => nop(),
            (Stopped | Running | Draining | Stopping, HoldNotWritten) => self.hold_not_written(),
            (Stopped, Tick) => nop(),
            (Running, Tick) => self.with_hook(now, |h| h.tick(now)),
            (Draining, Tick) => self.with_drain(now, |d| d.tick(now)),
            (Stopping, Tick) => self.stopping_tick(now),
        }
    }

    /// A reaped pid: the job's process (what follows depends on the
    /// phase), the hook's, the drain script's, or an orphan's.
    fn reaped(&mut self, now: Instant, pid: Pid, exit: Exit) -> Actions {
        if self.job.is_some_and(|(main, _)| main == pid) {
            return match self.phase {
                State::Running | State::Draining => self.main_ended(now, pid, exit),
                State::Stopping => self.main_gone(pid, exit),
                State::Stopped => nop(),
            };
        }
        if self.hook.group() == Some(pid) {
            return self.with_hook(now, |h| h.exited(now, exit));
        }
        if self.drain.script() == Some(pid) {
            return self.with_drain(now, |d| d.ended(now, Some(exit), None));
        }
        nop()
    }

    // --- the steps, and the rules that cross regions ---

    fn boot(&self) -> Actions {
        let spawn = (!self.hold).then_some(Action::Spawn(Child::Main));
        spawn.into_iter().collect()
    }

    fn hold(&mut self) -> Actions {
        self.hold = true;
        vec![Action::WriteHold]
    }

    fn unhold(&mut self) -> Actions {
        let held = std::mem::replace(&mut self.hold, false);
        held.then_some(Action::RemoveHold).into_iter().collect()
    }

    fn hold_not_written(&mut self) -> Actions {
        self.hold = false;
        let why = "could not be written: a container restart will run the job again";
        vec![say!(Error: "the STOP marker {why}")]
    }

    /// The last word during a stop, START (`Then::Start`), STOP or TERM
    /// (`Then::Stay`) or SIGTERM, replaces the one before; not once
    /// container-run is exiting (a crash's status stays, a START is then
    /// ignored).
    fn stop_again(&mut self, word: Then) -> Actions {
        let open = |stop: &&mut Stop| matches!(stop.then, Then::Stay | Then::Start);
        match (self.stop.as_mut().filter(open), word) {
            (Some(stop), _) => stop.then = word,
            (None, Then::Start) => return start_ignored(),
            (None, _) => return nop(),
        }
        match word {
            Then::Start => self.unhold(),
            _ => nop(),
        }
    }

    /// STOP during a stop also ends a drain script that a TERM let run on.
    fn stop_while_stopping(&mut self) -> Actions {
        self.stop_again(Then::Stay);
        [self.drain.cancel(), self.hold()].concat()
    }

    /// An errand's container-run ends with the errand on TERM or SIGTERM.
    fn errand_or(&self, then: Then) -> Then {
        if self.cfg.errand {
            Then::ExitWithJob
        } else {
            then
        }
    }

    /// What a SIGTERM or SIGINT leads to once the job has stopped.
    fn shutdown_then(&self) -> Then {
        self.errand_or(Then::Exit(exit::OK))
    }

    /// What `then` does once nothing of the job is left: an errand's own
    /// status is 143 when it never ran (SPEC section 9).
    fn end(&self, then: Then) -> Actions {
        let last = self.last_exit;
        let errand = last.map_or(exit::ERRAND_NEVER_RAN, exit::from_wait);
        match then {
            Then::Stay => nop(),
            Then::Start => vec![Action::Spawn(Child::Main)],
            Then::Exit(code) => vec![Action::Exit(code)],
            Then::ExitWithJob => vec![Action::Exit(errand)],
        }
    }

    /// SIGTERM while running: the drain and the barrier first, when planned;
    /// a running post-start is cancelled first, as a STOP cancels it.
    fn shutdown(&mut self, now: Instant) -> Actions {
        if !self.drain.planned() {
            return self.stop_job(now, self.shutdown_then());
        }
        let hook = self.hook.group();
        let cancel = hook.map(|g| Action::Terminate(None, Some(g), Signal::SIGTERM));
        self.hook.cancel();
        self.phase = State::Draining;
        [cancel.into_iter().collect(), self.drain.begin(now)].concat()
    }

    /// A repeated SIGTERM: one line with the time left; it neither
    /// restarts a deadline nor replaces a crash status already recorded.
    fn again(&mut self, now: Instant) -> Actions {
        self.stop_again(self.shutdown_then());
        let drain_left = secs(self.drain.left(now).unwrap_or_default());
        let line = match (self.phase, self.stop_left(now)) {
            (State::Draining, _) => format!("draining: {drain_left} left before the stop"),
            (_, Some(left)) => format!("stopping: SIGKILL in {}", secs(left)),
            _ => "stopping: SIGKILL sent, waiting for the last processes".into(),
        };
        vec![say!(Info: "already {line}")]
    }

    /// STOP during the drain: it ends at once, and the job stops.
    fn stop_the_drain(&mut self, now: Instant) -> Actions {
        let killed = self.drain.cancel();
        let stop = self.stop_job(now, self.shutdown_then());
        [killed, stop, self.hold()].concat()
    }

    /// TERM during the drain (a drain script's own `bpm stop`): the job
    /// stops, and the script may run to its end.
    fn term_the_drain(&mut self, now: Instant) -> Actions {
        let said = self.drain.detach();
        [self.stop_job(now, self.shutdown_then()), said].concat()
    }

    /// The groups whose leaders live: the job's, and the hook's if asked.
    fn live_groups(&self, hook_too: bool) -> Vec<Pid> {
        let (main, hook) = (self.job.map(|(main, _)| main), self.hook.group());
        main.into_iter().chain(hook.filter(|_| hook_too)).collect()
    }

    /// QUIT (to the job's and the hook's groups) or a forwarded signal (to
    /// the job's).
    fn signal(&self, sig: Signal, hook_too: bool) -> Actions {
        let groups = self.live_groups(hook_too).into_iter();
        groups.map(|g| Action::Signal(g, sig)).collect()
    }

    fn main_started(&mut self, now: Instant, started: Started) -> Actions {
        let Started::Pid(pid) = started else {
            let code = if let Started::Failed(c) = started {
                c
            } else {
                exit::NOT_FOUND
            };
            self.last_exit = Some(Exit::Code(code));
            return vec![Action::Exit(code)];
        };
        (self.phase, self.job, self.starts) = (State::Running, Some((pid, now)), self.starts + 1);
        [vec![Action::WriteRunFiles(pid)], self.hook.begin(now)].concat()
    }

    /// A step of the hook, and the rule that crosses from it: a post-start
    /// that fails while the job runs stops the job, and container-run
    /// exits 1.
    fn with_hook(&mut self, now: Instant, f: impl FnOnce(&mut Hook) -> Actions) -> Actions {
        let said = f(&mut self.hook);
        if self.phase != State::Running || self.hook.status() != PostStart::Failed {
            return said;
        }
        [self.stop_job(now, Then::Exit(exit::FAILURE)), said].concat()
    }

    /// A step of the drain, and the rules that cross from it: a drain (and
    /// its barrier) that is over ends the `draining` phase with the stop; a
    /// detached script that is over no longer spares what it left in its
    /// group (SIGTERM, or SIGKILL once the stop's went out).
    fn with_drain(&mut self, now: Instant, f: impl FnOnce(&mut Drainer) -> Actions) -> Actions {
        let spared = self.drain.spare();
        let said = f(&mut self.drain);
        let live = matches!(self.drain.status(), Drain::Running | Drain::Waiting);
        if self.phase == State::Draining && !live {
            return [self.stop_job(now, self.shutdown_then()), said].concat();
        }
        let Some(group) = spared.filter(|_| self.drain.spare().is_none()) else {
            return said;
        };
        let signal = match self.stop {
            Some(Stop { kill_at: None, .. }) => Signal::SIGKILL,
            _ => Signal::SIGTERM,
        };
        [vec![Action::SignalMembers(group, signal)], said].concat()
    }

    /// Stop the job from `running` or `draining`: the stop's first signal,
    /// to the groups whose leaders live.
    fn stop_job(&mut self, now: Instant, then: Then) -> Actions {
        self.hook.cancel();
        let (job, hook) = (self.job.map(|(main, _)| main), self.hook.group());
        let kill_at = Some(after(now, self.cfg.stop_timeout));
        (self.phase, self.stop) = (State::Stopping, Some(Stop { then, kill_at }));
        vec![Action::Terminate(job, hook, self.cfg.stop_signal)]
    }

    /// At the exit of the job's process `job`: what escaped its group, and
    /// what is left of it; the groups a stop signalled while their leaders
    /// lived are left out.
    fn sweep(&self, job: Pid, signalled: bool) -> Action {
        let skip = [Some(job).filter(|_| signalled), self.hook.group()];
        let skip = skip.into_iter().flatten().collect();
        Action::Sweep(job, self.cfg.stop_signal, skip, self.drain.spare())
    }

    /// Stop what is left once the job's process has exited by itself while
    /// running or draining: the hook's group, then the sweep.
    fn stop_after_exit(&mut self, now: Instant, exit: Exit, then: Then) -> Actions {
        let Some((pid, _)) = self.job.take() else {
            return nop();
        };
        self.last_exit = Some(exit);
        let (hook, stop) = (self.hook.group(), self.stop_job(now, then));
        let first = if hook.is_some() { stop } else { nop() };
        [first, vec![self.sweep(pid, false)]].concat()
    }

    /// The job's process ended by itself while running or draining: an
    /// errand's container-run exits with its status, and so does any other
    /// after a crash or during the drain (whose waits it ends; a running
    /// script may finish); after exit 0 it waits for START.
    fn main_ended(&mut self, now: Instant, pid: Pid, exit: Exit) -> Actions {
        let (status, errand) = (exit::from_wait(exit), self.cfg.errand);
        let head = format!("process {pid} {exit}");
        let exiting = format!("exiting with {status}");
        let said = match (self.phase, errand, status) {
            (State::Draining, ..) => say!(Info: "the job's {head} during the drain"),
            (_, true, _) => say!(Info: "errand {head}: {exiting} once its tree is gone"),
            (_, false, 0) => say!(Info: "{head}: stopped, waiting for START"),
            _ => say!(Error: "{head}: stopping and {exiting}"),
        };
        let then = match (self.phase, errand, status) {
            (State::Running, false, 0) => Then::Stay,
            _ => Then::Exit(status),
        };
        let said = [vec![said], self.drain.detach()].concat();
        [said, self.stop_after_exit(now, exit, then)].concat()
    }

    /// The job's process ended during its stop: what escaped its group is
    /// swept now, unless SIGKILL went out already.
    fn main_gone(&mut self, pid: Pid, exit: Exit) -> Actions {
        (self.job, self.last_exit) = (None, Some(exit));
        let said = say!(Info: "the job's process {pid} {exit}");
        match self.stop {
            Some(Stop {
                kill_at: Some(_), ..
            }) => vec![said, self.sweep(pid, true)],
            _ => vec![said],
        }
    }

    fn kill_tree(&self) -> Action {
        Action::KillTree(self.live_groups(true), self.drain.spare())
    }

    /// A detached drain script's deadline, then the stop's SIGKILL.
    fn stopping_tick(&mut self, now: Instant) -> Actions {
        let said = self.with_drain(now, |d| d.tick(now));
        match &mut self.stop {
            Some(stop) if stop.kill_at.is_some_and(|at| at <= now) => stop.kill_at = None,
            _ => return said,
        }
        let t = self.cfg.stop_timeout;
        let line = say!(Info: "stop timeout of {t:?} reached: killing what is left");
        [said, vec![self.kill_tree(), line]].concat()
    }

    /// Every exited child is reaped: with nothing left, the stop is over;
    /// after SIGKILL, what was re-parented here since is killed too.
    fn drained(&mut self, children_left: bool) -> Actions {
        let Some(&Stop { then, kill_at, .. }) = self.stop.as_ref() else {
            return nop();
        };
        match (children_left, kill_at) {
            (true, None) => return vec![self.kill_tree()],
            (true, Some(_)) => return nop(),
            (false, _) => (self.phase, self.stop, self.job) = (State::Stopped, None, None),
        }
        let last = self.last_exit;
        let how = last.map_or("never started".into(), |e| e.to_string());
        let next = self.end(then);
        let what_next = match next.first() {
            Some(Action::Exit(code)) => format!("; exiting with {code}"),
            Some(_) => "; starting again".into(),
            None => String::new(),
        };
        let said = say!(Info: "stopped (the job's process {how}){what_next}");
        [vec![Action::RemoveRunFiles, said], next].concat()
    }

    /// While stopping and before SIGKILL: what is left until it.
    fn stop_left(&self, now: Instant) -> Option<Duration> {
        let kill_at = self.stop.as_ref()?.kill_at;
        kill_at.map(|at| at.saturating_duration_since(now))
    }

    /// The earliest instant at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kill_at = self.stop.as_ref().and_then(|stop| stop.kill_at);
        let (hook, drain) = (self.hook.next_deadline(), self.drain.next_deadline());
        [kill_at, hook, drain].into_iter().flatten().min()
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let then = self.stop.as_ref().map(|stop| stop.then);
        let exiting = matches!(then, Some(Then::Exit(_) | Then::ExitWithJob));
        Snapshot {
            state: self.phase,
            pid: self.job.map(|(main, _)| main),
            starts: self.starts,
            hold: self.hold,
            pending_start: then == Some(Then::Start),
            exiting: exiting || self.phase == State::Draining,
            post_start: self.hook.status(),
            uptime: self
                .job
                .map(|(_, since)| now.saturating_duration_since(since)),
            last_exit: self.last_exit.map(exit::from_wait),
            drain: self.drain.status(),
            drain_left: self.drain.left(now),
            stop_left: self.stop_left(now),
        }
    }

    pub fn state(&self) -> State {
        self.phase
    }
}

#[cfg(test)]
mod tests {
    use super::drain::{CHECK_STATUS, SHUTDOWN};
    use super::*;
    use ControlCommand::*;

    const STOP_TIMEOUT: Duration = Duration::from_secs(20);
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
    const JOB: Pid = 10;
    const HOOK: Pid = 20;
    const DRAIN: Pid = 30;
    const TERM: Signal = Signal::SIGTERM;

    fn cfg() -> MachineConfig {
        MachineConfig {
            stop_timeout: STOP_TIMEOUT,
            post_start_timeout: Duration::from_secs(60),
            condition_interval: Duration::from_secs(3),
            post_start: PostStartPlan::None,
            drain: DrainPlan::Off,
            errand: false,
            stop_signal: TERM,
        }
    }
    fn with_hook(post_start: PostStartPlan) -> MachineConfig {
        MachineConfig {
            post_start,
            ..cfg()
        }
    }
    fn with_drain() -> MachineConfig {
        let drain = DrainPlan::Script {
            timeout: DRAIN_TIMEOUT,
        };
        MachineConfig { drain, ..cfg() }
    }

    /// The machine's actions but its log lines.
    fn acts(m: &mut Machine, t: Instant, event: Event) -> Actions {
        let all = m.step(t, event);
        all.into_iter()
            .filter(|a| !matches!(a, Action::Log(..)))
            .collect()
    }
    /// Its log lines.
    fn said(m: &mut Machine, t: Instant, event: Event) -> Vec<String> {
        let all = m.step(t, event).into_iter();
        all.filter_map(|a| match a {
            Action::Log(_, line) => Some(line),
            _ => None,
        })
        .collect()
    }
    fn cmd(c: ControlCommand) -> Event {
        Event::Command(c)
    }
    fn code(c: u8) -> Exit {
        Exit::Code(c)
    }
    fn killed(s: u8) -> Exit {
        Exit::Signal(s)
    }
    fn spawned(child: Child, pid: Pid) -> Event {
        Event::Spawned(child, Started::Pid(pid))
    }
    fn terminate(hook: Option<Pid>) -> Action {
        Action::Terminate(Some(JOB), hook, TERM)
    }
    fn sweep(skip: &[Pid], spare: Option<Pid>) -> Action {
        Action::Sweep(JOB, TERM, skip.to_vec(), spare)
    }
    fn signal(group: Pid, signal: Signal) -> Action {
        Action::Signal(group, signal)
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A machine built from `cfg` with the main process running as `JOB`.
    fn running_with(cfg: MachineConfig) -> (Machine, Instant) {
        let mut m = Machine::new(cfg, false);
        let t = Instant::now();
        assert_eq!(acts(&mut m, t, Event::Boot), [Action::Spawn(Child::Main)]);
        let first = acts(&mut m, t, spawned(Child::Main, JOB));
        assert_eq!(first[0], Action::WriteRunFiles(JOB));
        assert_eq!(m.state(), State::Running);
        (m, t)
    }
    fn running() -> (Machine, Instant) {
        running_with(cfg())
    }

    /// The job's process ends after the stop signal, and nothing is left.
    fn finish_stop(m: &mut Machine, t: Instant) -> Actions {
        acts(m, t, Event::Reaped(JOB, killed(15)));
        acts(m, t, Event::Drained(false))
    }

    #[test]
    fn stop_signals_first_then_sweeps_at_the_jobs_exit_and_stops_when_nothing_is_left() {
        let (mut m, t) = running();
        // The signal first, then the marker.
        assert_eq!(m.step(t, cmd(Stop)), [terminate(None), Action::WriteHold]);
        assert_eq!(m.state(), State::Stopping);
        assert!(m.snapshot(t).hold);
        // What escaped the job's group is swept at its exit, not before.
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, killed(15))),
            [sweep(&[JOB], None)]
        );
        assert_eq!(m.snapshot(t).pid, None);
        // Files stay until nothing is left.
        assert_eq!(acts(&mut m, t, Event::Drained(true)), []);
        assert_eq!(m.state(), State::Stopping);
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles]
        );
        assert_eq!(m.state(), State::Stopped);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.snapshot(t).last_exit, Some(143));
    }

    #[test]
    fn term_is_a_stop_without_hold_and_stop_when_stopped_still_holds() {
        let (mut m, t) = running();
        assert_eq!(acts(&mut m, t, cmd(Term)), [terminate(None)]);
        assert!(!m.snapshot(t).hold);
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(acts(&mut m, t, cmd(Stop)), [Action::WriteHold]);
        assert_eq!(acts(&mut m, t, cmd(Term)), []);
        assert!(m.snapshot(t).hold);
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn start_removes_the_hold_and_spawns_and_a_held_boot_stays_stopped() {
        let mut m = Machine::new(cfg(), true);
        let t = Instant::now();
        assert_eq!(acts(&mut m, t, Event::Boot), []);
        assert_eq!(
            acts(&mut m, t, cmd(Start)),
            [Action::RemoveHold, Action::Spawn(Child::Main)]
        );
        assert_eq!(
            acts(&mut m, t, spawned(Child::Main, JOB)),
            [Action::WriteRunFiles(JOB)]
        );
        assert_eq!(acts(&mut m, t, cmd(Start)), []);
        assert_eq!(m.snapshot(t).starts, 1);
    }

    #[test]
    fn the_last_command_of_a_burst_wins() {
        let (mut m, t) = running();
        acts(&mut m, t, cmd(Stop));
        assert_eq!(acts(&mut m, t, cmd(Start)), [Action::RemoveHold]);
        assert!(m.snapshot(t).pending_start);
        assert_eq!(acts(&mut m, t, cmd(Term)), []);
        assert!(!m.snapshot(t).pending_start);
        acts(&mut m, t, cmd(Start));
        acts(&mut m, t, Event::Reaped(JOB, killed(15)));
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Spawn(Child::Main)]
        );
        acts(&mut m, t, spawned(Child::Main, 11));
        assert_eq!(m.state(), State::Running);
        assert_eq!(m.snapshot(t).starts, 2);
    }

    #[test]
    fn stop_timeout_kills_the_tree_then_sweeps_orphans_at_each_reap() {
        let (mut m, t) = running();
        acts(&mut m, t, cmd(Term));
        let kill_at = t + STOP_TIMEOUT;
        assert_eq!(m.next_deadline(), Some(kill_at));
        assert_eq!(acts(&mut m, kill_at - secs(1), Event::Tick), []);
        // Before the timeout, a reap with children left is just waited out.
        assert_eq!(acts(&mut m, t, Event::Drained(true)), []);
        let kill = |groups: &[Pid]| Action::KillTree(groups.to_vec(), None);
        assert_eq!(acts(&mut m, kill_at, Event::Tick), [kill(&[JOB])]);
        assert_eq!(m.next_deadline(), None);
        // Once the job's process is reaped, its group is no longer named:
        // what is left of it is found through the tree.
        assert_eq!(acts(&mut m, kill_at, Event::Reaped(JOB, killed(9))), []);
        assert_eq!(acts(&mut m, kill_at, Event::Drained(true)), [kill(&[])]);
        assert_eq!(
            acts(&mut m, kill_at, Event::Drained(false)),
            [Action::RemoveRunFiles]
        );
        assert_eq!(m.snapshot(t).last_exit, Some(137));
    }

    #[test]
    fn main_exit_zero_stays_up_and_a_crash_exits_with_its_status() {
        let (mut m, t) = running();
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(0))),
            [sweep(&[], None)]
        );
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles]
        );
        assert_eq!(m.state(), State::Stopped);

        let (mut m, t) = running();
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(3))),
            [sweep(&[], None)]
        );
        assert!(m.snapshot(t).exiting);
        // A START while exiting is ignored; a SIGTERM keeps the status.
        assert_eq!(acts(&mut m, t, cmd(Start)), []);
        assert_eq!(acts(&mut m, t, Event::Shutdown(TERM)), []);
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(3)]
        );

        let (mut m, t) = running();
        acts(&mut m, t, Event::Reaped(JOB, killed(9)));
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(137)]
        );
    }

    #[test]
    fn shutdown_stops_then_exits_zero_and_a_repeat_keeps_the_deadline() {
        let (mut m, t) = running();
        assert_eq!(acts(&mut m, t, Event::Shutdown(TERM)), [terminate(None)]);
        let later = t + secs(5);
        assert_eq!(
            said(&mut m, later, Event::Shutdown(TERM)),
            ["already stopping: SIGKILL in 15.0 s"]
        );
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );

        let mut m = Machine::new(cfg(), true);
        acts(&mut m, t, Event::Boot);
        assert_eq!(acts(&mut m, t, Event::Shutdown(TERM)), [Action::Exit(0)]);
    }

    #[test]
    fn spawn_failure_exits_with_its_code() {
        let mut m = Machine::new(cfg(), false);
        let t = Instant::now();
        acts(&mut m, t, Event::Boot);
        let failed = Event::Spawned(Child::Main, Started::Failed(126));
        assert_eq!(acts(&mut m, t, failed), [Action::Exit(126)]);
    }

    #[test]
    fn signals_reach_the_main_group_only_while_its_process_lives() {
        let (mut m, t) = running();
        assert_eq!(
            acts(&mut m, t, Event::Forward(Signal::SIGHUP)),
            [signal(JOB, Signal::SIGHUP)]
        );
        assert_eq!(acts(&mut m, t, Event::Reaped(99, code(0))), []);
        assert_eq!(acts(&mut m, t, Event::Drained(true)), []);
        assert_eq!(m.state(), State::Running);
        acts(&mut m, t, cmd(Term));
        assert_eq!(
            acts(&mut m, t, Event::Forward(Signal::SIGUSR1)),
            [signal(JOB, Signal::SIGUSR1)]
        );
        // Its pid is free once it is reaped: no signal names it again.
        acts(&mut m, t, Event::Reaped(JOB, killed(15)));
        assert_eq!(acts(&mut m, t, Event::Forward(Signal::SIGUSR1)), []);
        assert_eq!(acts(&mut m, t, cmd(Quit)), []);
        acts(&mut m, t, Event::Drained(false));
        assert_eq!(acts(&mut m, t, Event::Forward(Signal::SIGUSR1)), []);
    }

    #[test]
    fn post_start_after_a_condition_that_fails_twice() {
        let (mut m, t) = running_with(with_hook(PostStartPlan::AfterCondition));
        assert_eq!(m.snapshot(t).post_start, PostStart::Pending);
        acts(&mut m, t, spawned(Child::Condition, HOOK));
        assert_eq!(acts(&mut m, t, Event::Reaped(HOOK, code(1))), []);
        let retry = t + secs(3);
        assert_eq!(m.next_deadline(), Some(retry));
        assert_eq!(
            acts(&mut m, retry, Event::Tick),
            [Action::Spawn(Child::Condition)]
        );
        let failed = Event::Spawned(Child::Condition, Started::Failed(126));
        assert_eq!(acts(&mut m, retry, failed), []);
        let retry = retry + secs(3);
        assert_eq!(
            acts(&mut m, retry, Event::Tick),
            [Action::Spawn(Child::Condition)]
        );
        acts(&mut m, retry, spawned(Child::Condition, 21));
        assert_eq!(
            acts(&mut m, retry, Event::Reaped(21, code(0))),
            [Action::Spawn(Child::PostStart)]
        );
        acts(&mut m, retry, spawned(Child::PostStart, 22));
        assert_eq!(m.snapshot(t).post_start, PostStart::Running);
        assert_eq!(
            acts(&mut m, retry, cmd(Quit)),
            [signal(JOB, Signal::SIGQUIT), signal(22, Signal::SIGQUIT)]
        );
        assert_eq!(
            said(&mut m, retry, Event::Reaped(22, code(0))),
            ["post-start done"]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Done);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_missing_post_start_is_skipped_before_its_condition_runs() {
        let (mut m, t) = running_with(with_hook(PostStartPlan::AfterCondition));
        // The loop finds the post-start missing when the condition is due.
        let missing = Event::Spawned(Child::Condition, Started::Missing);
        assert_eq!(acts(&mut m, t, missing), []);
        let s = m.snapshot(t);
        assert_eq!(
            (s.state, s.post_start),
            (State::Running, PostStart::Skipped)
        );
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_failed_or_late_post_start_stops_the_job_and_exits_one() {
        let direct = with_hook(PostStartPlan::Direct);
        let (mut m, t) = running_with(direct);
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        // The hook's process is reaped: its group is not named again (the
        // tree reaches what is left of it).
        assert_eq!(
            acts(&mut m, t, Event::Reaped(HOOK, code(2))),
            [terminate(None)]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Failed);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(1)]
        );

        let (mut m, t) = running_with(direct);
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        let late = t + secs(60);
        assert_eq!(m.next_deadline(), Some(late));
        assert_eq!(acts(&mut m, late, Event::Tick), [terminate(Some(HOOK))]);
        assert_eq!(m.snapshot(t).post_start, PostStart::Failed);
    }

    #[test]
    fn stop_cancels_a_post_start_without_failure_and_start_runs_it_again() {
        let (mut m, t) = running_with(with_hook(PostStartPlan::Direct));
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        assert_eq!(
            acts(&mut m, t, cmd(Stop)),
            [terminate(Some(HOOK)), Action::WriteHold]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Cancelled);
        acts(&mut m, t, Event::Reaped(HOOK, killed(15)));
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(m.next_deadline(), None);
        acts(&mut m, t, cmd(Start));
        assert_eq!(
            acts(&mut m, t, spawned(Child::Main, 11)),
            [Action::WriteRunFiles(11), Action::Spawn(Child::PostStart)]
        );
        let missing = Event::Spawned(Child::PostStart, Started::Missing);
        assert_eq!(acts(&mut m, t, missing), []);
        assert_eq!(m.snapshot(t).post_start, PostStart::Skipped);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_hook_reaped_while_stopping_is_never_named_again() {
        let (mut m, t) = running_with(with_hook(PostStartPlan::Direct));
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        acts(&mut m, t, cmd(Term));
        assert_eq!(acts(&mut m, t, Event::Reaped(HOOK, killed(15))), []);
        assert_eq!(acts(&mut m, t, cmd(Quit)), [signal(JOB, Signal::SIGQUIT)]);
        let kill_at = t + STOP_TIMEOUT;
        assert_eq!(
            acts(&mut m, kill_at, Event::Tick),
            [Action::KillTree(vec![JOB], None)]
        );
        assert_eq!(acts(&mut m, kill_at, Event::Reaped(JOB, killed(9))), []);
        assert_eq!(
            acts(&mut m, kill_at, Event::Drained(true)),
            [Action::KillTree(vec![], None)]
        );
    }

    #[test]
    fn the_stop_signal_goes_to_the_job_and_sigterm_to_the_hook() {
        let (mut m, t) = running_with(MachineConfig {
            stop_signal: Signal::SIGINT,
            ..with_hook(PostStartPlan::Direct)
        });
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        assert_eq!(
            acts(&mut m, t, cmd(Term)),
            [Action::Terminate(Some(JOB), Some(HOOK), Signal::SIGINT)]
        );
        // What is left of the job's group gets the stop signal at its exit,
        // the hook's group having had its SIGTERM already.
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(0))),
            [Action::Sweep(JOB, Signal::SIGINT, vec![JOB, HOOK], None)]
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
            assert_eq!(
                acts(&mut m, t, Event::Reaped(JOB, code(status))),
                [sweep(&[], None)]
            );
            assert_eq!(
                acts(&mut m, t, Event::Drained(false)),
                [Action::RemoveRunFiles, Action::Exit(status)]
            );
        }
        // SIGTERM (and TERM): the errand's status, 143 when SIGTERM killed it.
        for ask in [Event::Shutdown(TERM), cmd(Term)] {
            let (mut m, t) = running_with(errand);
            assert_eq!(acts(&mut m, t, ask), [terminate(None)]);
            assert_eq!(
                finish_stop(&mut m, t),
                [Action::RemoveRunFiles, Action::Exit(143)]
            );
        }
        // An errand that handles SIGTERM and exits 0 has succeeded.
        let (mut m, t) = running_with(errand);
        acts(&mut m, t, Event::Shutdown(TERM));
        acts(&mut m, t, Event::Reaped(JOB, code(0)));
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
        // STOP holds it; told to end when it never ran: 143.
        let mut m = Machine::new(errand, true);
        acts(&mut m, t, Event::Boot);
        assert_eq!(acts(&mut m, t, cmd(Term)), [Action::Exit(143)]);
        let (mut m, t) = running_with(errand);
        acts(&mut m, t, cmd(Stop));
        assert_eq!(finish_stop(&mut m, t), [Action::RemoveRunFiles]);
        assert_eq!(acts(&mut m, t, Event::Shutdown(TERM)), [Action::Exit(143)]);
    }

    #[test]
    fn a_hold_that_could_not_be_written_is_not_reported() {
        let (mut m, t) = running();
        acts(&mut m, t, cmd(Stop));
        assert_eq!(acts(&mut m, t, Event::HoldNotWritten), []);
        assert!(!m.snapshot(t).hold);
    }

    // --- drain and barrier (SPEC section 8) ---

    fn draining() -> (Machine, Instant) {
        let (mut m, t) = running_with(with_drain());
        assert_eq!(m.snapshot(t).drain, Drain::Ready);
        assert_eq!(
            acts(&mut m, t, Event::Shutdown(TERM)),
            [Action::Spawn(Child::Drain(SHUTDOWN))]
        );
        assert_eq!(m.state(), State::Draining);
        assert_eq!(acts(&mut m, t, spawned(Child::Drain(SHUTDOWN), DRAIN)), []);
        (m, t)
    }

    /// The drain call `pid` ends with `exit` and prints `out`.
    fn call_ends(m: &mut Machine, t: Instant, pid: Pid, exit: Exit, out: &str) -> Actions {
        let mut all = acts(m, t, Event::Reaped(pid, exit));
        all.extend(acts(m, t, Event::DrainOutput(out.as_bytes().to_vec())));
        all
    }

    fn no_peers(m: &mut Machine, t: Instant) -> Actions {
        acts(m, t, Event::PeersAnswered(Peers::default()))
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
        assert_eq!(acts(&mut m, done, Event::Tick), [Action::AskPeers]);
        assert_eq!(m.snapshot(t).drain, Drain::Waiting);
        assert_eq!(no_peers(&mut m, done), [terminate(None)]);
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn a_dynamic_drain_checks_status_until_it_prints_zero() {
        let (mut m, t) = draining();
        let (mut now, mut pid) = (t, DRAIN);
        for _ in 0..3 {
            assert_eq!(call_ends(&mut m, now, pid, code(0), "-1"), []);
            now += secs(1);
            let check = Action::Spawn(Child::Drain(CHECK_STATUS));
            assert_eq!(acts(&mut m, now, Event::Tick), [check]);
            pid += 1;
            acts(&mut m, now, spawned(Child::Drain(CHECK_STATUS), pid));
        }
        // The output may come before the exit.
        assert_eq!(acts(&mut m, now, Event::DrainOutput(b"0\n".to_vec())), []);
        assert_eq!(
            acts(&mut m, now, Event::Reaped(pid, code(0))),
            [Action::AskPeers]
        );
    }

    #[test]
    fn a_failed_missing_or_overdue_drain_never_blocks_the_stop() {
        for (exit, out) in [(code(0), "garbage"), (code(1), "0"), (killed(9), "")] {
            let (mut m, t) = draining();
            assert_eq!(call_ends(&mut m, t, DRAIN, exit, out), [Action::AskPeers]);
            assert_eq!(no_peers(&mut m, t), [terminate(None)]);
            assert_eq!(m.snapshot(t).drain, Drain::Failed);
        }
        let (mut m, t) = running_with(with_drain());
        acts(&mut m, t, Event::Shutdown(TERM));
        let missing = Event::Spawned(Child::Drain(SHUTDOWN), Started::Missing);
        assert_eq!(acts(&mut m, t, missing), [Action::AskPeers]);
        assert_eq!(no_peers(&mut m, t), [terminate(None)]);
        assert_eq!(m.snapshot(t).drain, Drain::Skipped);

        let (mut m, t) = draining();
        let end = t + DRAIN_TIMEOUT;
        assert_eq!(m.next_deadline(), Some(end));
        assert_eq!(
            acts(&mut m, end, Event::Tick),
            [terminate(None), signal(DRAIN, Signal::SIGKILL)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::TimedOut);
    }

    #[test]
    fn stop_ends_a_drain_at_once_and_term_lets_its_script_finish() {
        let (mut m, t) = draining();
        assert_eq!(
            acts(&mut m, t, cmd(Stop)),
            [
                signal(DRAIN, Signal::SIGKILL),
                terminate(None),
                Action::WriteHold
            ]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Cancelled);
        assert_eq!(
            finish_stop(&mut m, t),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );

        let (mut m, t) = draining();
        assert_eq!(acts(&mut m, t, cmd(Term)), [terminate(None)]);
        assert_eq!(m.snapshot(t).drain, Drain::Running);
        // The sweep at the job's exit and the stop's SIGKILL spare it.
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, killed(15))),
            [sweep(&[JOB], Some(DRAIN))]
        );
        assert_eq!(acts(&mut m, t, Event::Drained(true)), []);
        let kill_at = t + STOP_TIMEOUT;
        let kill = |spare| Action::KillTree(vec![], spare);
        assert_eq!(acts(&mut m, kill_at, Event::Tick), [kill(Some(DRAIN))]);
        assert_eq!(
            acts(&mut m, kill_at, Event::Drained(true)),
            [kill(Some(DRAIN))]
        );
        // The loop's order: the script is reaped, then the reap is drained,
        // then its output is read. Once it is judged, what it left in its
        // group is killed at once: nothing may outlive the stop timeout.
        assert_eq!(acts(&mut m, kill_at, Event::Reaped(DRAIN, code(0))), []);
        assert_eq!(
            acts(&mut m, kill_at, Event::Drained(true)),
            [kill(Some(DRAIN))]
        );
        assert_eq!(
            acts(&mut m, kill_at, Event::DrainOutput(b"5".to_vec())),
            [Action::SignalMembers(DRAIN, Signal::SIGKILL)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(acts(&mut m, kill_at, Event::Drained(true)), [kill(None)]);
        assert_eq!(
            acts(&mut m, kill_at, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn a_detached_script_ends_before_the_stop_timeout_or_by_a_later_stop() {
        // Before the stop timeout, what the script left gets SIGTERM.
        let (mut m, t) = draining();
        acts(&mut m, t, cmd(Term));
        acts(&mut m, t, Event::Reaped(JOB, killed(15)));
        assert_eq!(
            call_ends(&mut m, t, DRAIN, code(0), "garbage"),
            [Action::SignalMembers(DRAIN, TERM)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Failed);
        assert_eq!(m.next_deadline(), Some(t + STOP_TIMEOUT));

        // A STOP after the TERM ends the script at once.
        let (mut m, t) = draining();
        acts(&mut m, t, cmd(Term));
        assert_eq!(
            acts(&mut m, t, cmd(Stop)),
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
        assert_eq!(acts(&mut m, t, cmd(Start)), []);
        assert_eq!(
            said(&mut m, t + secs(3), Event::Shutdown(TERM)),
            ["already draining: 597.0 s left before the stop"]
        );
        assert_eq!(m.next_deadline(), Some(t + DRAIN_TIMEOUT));
        assert_eq!(
            acts(&mut m, t, Event::Forward(Signal::SIGHUP)),
            [signal(JOB, Signal::SIGHUP)]
        );
    }

    #[test]
    fn the_jobs_exit_ends_the_drain_and_container_run_exits_with_its_status() {
        let (mut m, t) = draining();
        assert_eq!(call_ends(&mut m, t, DRAIN, code(0), "30"), []);
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(4))),
            [sweep(&[], None)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Cancelled);
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(4)]
        );

        // A running script may finish first, spared by the sweep.
        let (mut m, t) = draining();
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(0))),
            [sweep(&[], Some(DRAIN))]
        );
        assert_eq!(acts(&mut m, t, Event::Drained(true)), []);
        call_ends(&mut m, t, DRAIN, code(0), "0");
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
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
        let busy = Peers {
            draining: 1,
            ready: 0,
        };
        acts(&mut m, t, Event::PeersAnswered(busy));
        assert_eq!(
            acts(&mut m, t, Event::Reaped(JOB, code(0))),
            [sweep(&[], None)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::Done);
        assert_eq!(
            acts(&mut m, t, Event::Drained(false)),
            [Action::RemoveRunFiles, Action::Exit(0)]
        );
    }

    #[test]
    fn the_barrier_waits_for_draining_peers_and_for_ready_ones_while_settling() {
        let barrier = DrainPlan::Barrier {
            timeout: DRAIN_TIMEOUT,
        };
        let (mut m, t) = running_with(MachineConfig {
            drain: barrier,
            ..cfg()
        });
        assert_eq!(acts(&mut m, t, Event::Shutdown(TERM)), [Action::AskPeers]);
        assert_eq!(m.snapshot(t).drain, Drain::Waiting);
        let busy = |draining, ready| Event::PeersAnswered(Peers { draining, ready });
        // A peer whose SIGTERM may be on its way.
        assert_eq!(acts(&mut m, t, busy(0, 1)), []);
        let next = t + drain::PEER_RECHECK;
        assert_eq!(m.next_deadline(), Some(next));
        assert_eq!(acts(&mut m, next, Event::Tick), [Action::AskPeers]);
        // Its drain started: waited for past the settling window.
        assert_eq!(acts(&mut m, next, busy(1, 0)), []);
        let late = t + drain::SETTLE + secs(1);
        assert_eq!(acts(&mut m, late, Event::Tick), [Action::AskPeers]);
        assert_eq!(acts(&mut m, late, busy(1, 0)), []);
        // A peer still ready after the window runs on: no wait for it.
        let later = late + drain::PEER_RECHECK;
        assert_eq!(acts(&mut m, later, Event::Tick), [Action::AskPeers]);
        assert_eq!(acts(&mut m, later, busy(0, 1)), [terminate(None)]);
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
        acts(&mut m, near, busy);
        assert_eq!(m.next_deadline(), Some(t + DRAIN_TIMEOUT));
        assert_eq!(
            acts(&mut m, t + DRAIN_TIMEOUT, Event::Tick),
            [terminate(None)]
        );
        assert_eq!(m.snapshot(t).drain, Drain::TimedOut);
    }

    #[test]
    fn a_drain_cancels_a_running_post_start_first() {
        let (mut m, t) = running_with(MachineConfig {
            post_start: PostStartPlan::Direct,
            ..with_drain()
        });
        acts(&mut m, t, spawned(Child::PostStart, HOOK));
        assert_eq!(
            acts(&mut m, t, Event::Shutdown(TERM)),
            [
                Action::Terminate(None, Some(HOOK), TERM),
                Action::Spawn(Child::Drain(SHUTDOWN))
            ]
        );
        assert_eq!(m.snapshot(t).post_start, PostStart::Cancelled);
        acts(&mut m, t, spawned(Child::Drain(SHUTDOWN), DRAIN));
        call_ends(&mut m, t, DRAIN, code(0), "0");
        // The final stop still reaches the post-start while it lives.
        assert_eq!(no_peers(&mut m, t), [terminate(Some(HOOK))]);
    }

    #[test]
    fn stop_and_term_never_drain() {
        for command in [Stop, Term] {
            let (mut m, t) = running_with(with_drain());
            assert_eq!(acts(&mut m, t, cmd(command))[0], terminate(None));
            assert_eq!(m.snapshot(t).drain, Drain::Ready);
        }
    }
}

/// The `//!` invariants, checked against a simulated world: processes that
/// are spawned, signalled, die and are reaped as the loop would report them,
/// under random sequences of commands, signals, exits, outputs, peer
/// answers and the passing of time.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// What the world does next.
    #[derive(Debug, Clone)]
    enum Poke {
        Command(ControlCommand),
        Shutdown,
        Forward,
        /// A process (by index) ends by itself with a code.
        Ends(usize, u8),
        /// Every exited child is reaped.
        Reap,
        /// The drain script's output arrives, if it has ended.
        Output,
        Peers(usize, usize),
        /// Milliseconds pass.
        Wait(u64),
    }

    fn poke() -> impl Strategy<Value = Poke> {
        use ControlCommand::*;
        let command = prop::sample::select(vec![Start, Stop, Term, Quit, Status]);
        prop_oneof![
            4 => command.prop_map(Poke::Command),
            1 => Just(Poke::Shutdown),
            1 => Just(Poke::Forward),
            2 => (0..6usize, 0..3u8).prop_map(|(i, c)| Poke::Ends(i, c)),
            3 => Just(Poke::Reap),
            1 => Just(Poke::Output),
            1 => (0..2usize, 0..2usize).prop_map(|(d, r)| Poke::Peers(d, r)),
            3 => (0..12_000u64).prop_map(Poke::Wait),
        ]
    }

    #[derive(Debug, Clone, Copy)]
    struct Proc {
        pid: Pid,
        group: Pid,
        ignores_term: bool,
    }

    struct World {
        m: Machine,
        now: Instant,
        next_pid: Pid,
        live: Vec<Proc>,
        dead: Vec<(Pid, Exit)>,
        /// Leaders whose reap was reported: their groups must not be named.
        reaped: Vec<Pid>,
        /// The drain script's pid and its stdout, until it is read.
        drain_out: Option<(Pid, &'static str)>,
        peers_asked: bool,
        run_files: bool,
        marker: bool,
        exited: Option<u8>,
        fates: Vec<u8>,
        turn: usize,
        stubborn: bool,
        /// The state the last command or the job's own exit asked for:
        /// `Some(true)` up, `Some(false)` down.
        intent: Option<bool>,
    }

    impl World {
        fn fate(&mut self) -> u8 {
            self.turn += 1;
            self.fates[self.turn % self.fates.len()]
        }

        fn feed(&mut self, event: Event) {
            if self.exited.is_some() {
                return;
            }
            let mut queue: std::collections::VecDeque<Action> = self.m.step(self.now, event).into();
            while let Some(action) = queue.pop_front() {
                if let Some(follow) = self.perform(action) {
                    queue.extend(self.m.step(self.now, follow));
                }
                if self.exited.is_some() {
                    return;
                }
            }
            self.check();
        }

        fn named(&self, group: Pid) {
            assert!(
                !self.reaped.contains(&group),
                "group {group} named after its leader's reap"
            );
        }

        fn hit(&mut self, which: impl Fn(&Proc) -> bool, signal: Signal) {
            let deadly = match signal {
                Signal::SIGKILL => |_: &Proc| true,
                Signal::SIGTERM | Signal::SIGINT => |p: &Proc| !p.ignores_term,
                _ => |_: &Proc| false,
            };
            let (gone, kept): (Vec<Proc>, Vec<Proc>) =
                self.live.iter().partition(|p| which(p) && deadly(p));
            self.live = kept;
            let code = signal as i32 as u8;
            self.dead
                .extend(gone.iter().map(|p| (p.pid, Exit::Signal(code))));
        }

        fn perform(&mut self, action: Action) -> Option<Event> {
            match action {
                Action::Spawn(child) => return Some(self.spawn(child)),
                Action::Signal(group, signal) => {
                    self.named(group);
                    self.hit(|p| p.group == group, signal);
                }
                Action::Terminate(job, hook, signal) => {
                    job.iter().chain(hook.iter()).for_each(|&g| self.named(g));
                    self.hit(|p| Some(p.group) == job, signal);
                    self.hit(|p| Some(p.group) == hook, Signal::SIGTERM);
                }
                Action::Sweep(job, signal, skip, spare) => {
                    let out = |p: &Proc| !skip.contains(&p.group) && Some(p.group) != spare;
                    self.hit(|p| out(p) && p.group == job, signal);
                    self.hit(|p| out(p) && p.group != job, Signal::SIGTERM);
                }
                Action::SignalMembers(group, signal) => self.hit(|p| p.group == group, signal),
                Action::KillTree(groups, spare) => {
                    groups.iter().for_each(|&g| self.named(g));
                    self.hit(|p| Some(p.group) != spare, Signal::SIGKILL);
                }
                Action::AskPeers => self.peers_asked = true,
                Action::WriteRunFiles(_) => self.run_files = true,
                Action::RemoveRunFiles => self.run_files = false,
                // A failed write leaves whatever marker was there.
                Action::WriteHold if self.fate() == 0 => {
                    return (!self.marker).then_some(Event::HoldNotWritten);
                }
                Action::WriteHold => self.marker = true,
                Action::RemoveHold => self.marker = false,
                Action::Log(_, line) => assert!(!line.is_empty()),
                Action::Exit(code) => {
                    assert!(self.live.is_empty(), "exit with {:?} alive", self.live);
                    self.exited = Some(code);
                }
            }
            None
        }

        fn spawn(&mut self, child: Child) -> Event {
            let fate = self.fate();
            let started = match (child, fate % 8) {
                (_, 0) => Started::Failed(126),
                (Child::Main, _) => Started::Pid(self.next_pid),
                (_, 1) => Started::Missing,
                _ => Started::Pid(self.next_pid),
            };
            let Started::Pid(pid) = started else {
                return Event::Spawned(child, started);
            };
            self.next_pid += 3;
            let stubborn = self.stubborn && child == Child::Main;
            self.live.push(Proc {
                pid,
                group: pid,
                ignores_term: stubborn,
            });
            if child == Child::Main {
                // A member of its group, and one that escaped it.
                self.live.push(Proc {
                    pid: pid + 1,
                    group: pid,
                    ignores_term: stubborn,
                });
                self.live.push(Proc {
                    pid: pid + 2,
                    group: pid + 2,
                    ignores_term: false,
                });
            }
            if let Child::Drain(_) = child {
                let out = ["0", "1", "-1", "garbage"][usize::from(fate % 4)];
                self.drain_out = Some((pid, out));
            }
            Event::Spawned(child, started)
        }

        /// Every exited child is reaped (the loop: each reap, the drain's
        /// output when its writer is gone, then whether children are left).
        fn reap(&mut self) {
            for (pid, exit) in std::mem::take(&mut self.dead) {
                self.reaped.push(pid);
                // The job's own exit 0 is the last word once it is known.
                let main = self.m.job.is_some_and(|(main, _)| main == pid);
                if main && self.m.state() == State::Running && exit == Exit::Code(0) {
                    self.intent = Some(false);
                }
                self.feed(Event::Reaped(pid, exit));
            }
            self.output();
            // Whether children are left is asked after the machine has
            // heard of the reaps, which may have spawned one (a condition
            // that passed starts the post-start) or signalled some dead.
            let left = !self.live.is_empty() || !self.dead.is_empty();
            self.feed(Event::Drained(left));
        }

        fn output(&mut self) {
            if let Some((pid, out)) = self.drain_out
                && !self.live.iter().any(|p| p.pid == pid)
            {
                self.drain_out = None;
                self.feed(Event::DrainOutput(out.as_bytes().to_vec()));
            }
        }

        fn poke(&mut self, poke: Poke) {
            match poke {
                Poke::Command(c) => {
                    self.intent = match c {
                        ControlCommand::Start => Some(true),
                        ControlCommand::Stop | ControlCommand::Term => Some(false),
                        _ => self.intent,
                    };
                    self.feed(Event::Command(c));
                }
                Poke::Shutdown => self.feed(Event::Shutdown(Signal::SIGTERM)),
                Poke::Forward => self.feed(Event::Forward(Signal::SIGHUP)),
                Poke::Ends(i, code) if !self.live.is_empty() => {
                    let p = self.live.remove(i % self.live.len());
                    self.dead.push((p.pid, Exit::Code(code)));
                }
                Poke::Ends(..) => {}
                Poke::Reap => self.reap(),
                Poke::Output => self.output(),
                Poke::Peers(draining, ready) if self.peers_asked => {
                    self.peers_asked = false;
                    self.feed(Event::PeersAnswered(Peers { draining, ready }));
                }
                Poke::Peers(..) => {}
                Poke::Wait(ms) => {
                    self.now += Duration::from_millis(ms);
                    self.feed(Event::Tick);
                }
            }
        }

        /// What holds after every event.
        fn check(&self) {
            let m = &self.m;
            let s = m.snapshot(self.now);
            assert_eq!(s.hold, self.marker, "the hold mirrors the marker");
            assert_eq!(self.run_files, s.state != State::Stopped, "run files");
            assert_eq!(m.stop.is_some(), s.state == State::Stopping);
            if s.state == State::Stopped {
                assert!(self.live.is_empty(), "stopped with {:?} alive", self.live);
                assert!(m.job.is_none() && m.hook.group().is_none() && m.drain.spare().is_none());
                assert!(!matches!(s.drain, Drain::Running | Drain::Waiting));
                assert!(!matches!(
                    s.post_start,
                    PostStart::Pending | PostStart::Running
                ));
            }
            // Every wait has a deadline that `next_deadline` reports.
            let waits = [
                m.hook.next_deadline(),
                m.drain.next_deadline(),
                self.kill_at(),
            ];
            assert_eq!(m.next_deadline(), waits.into_iter().flatten().min());
            if matches!(s.post_start, PostStart::Pending | PostStart::Running) {
                assert!(
                    m.hook.next_deadline().is_some(),
                    "a live hook without deadline"
                );
            }
            if matches!(s.drain, Drain::Running | Drain::Waiting) {
                assert!(
                    m.drain.next_deadline().is_some(),
                    "a live drain without deadline"
                );
            }
        }

        fn kill_at(&self) -> Option<Instant> {
            self.m.stop.as_ref().and_then(|stop| stop.kill_at)
        }

        /// Nothing more from outside: children are reaped, peers answer,
        /// and time runs to each deadline. The machine must come to rest:
        /// exited, running or stopped; never waiting without a deadline.
        fn settle(&mut self) {
            for _ in 0..400 {
                if self.exited.is_some() {
                    return;
                }
                if !self.dead.is_empty() || self.drain_out.is_some_and(|(p, _)| !self.alive(p)) {
                    self.reap();
                } else if self.peers_asked {
                    self.peers_asked = false;
                    self.feed(Event::PeersAnswered(Peers::default()));
                } else if let Some(at) = self.m.next_deadline() {
                    self.now = self.now.max(at);
                    self.feed(Event::Tick);
                } else {
                    let state = self.m.state();
                    assert!(
                        matches!(state, State::Running | State::Stopped),
                        "{state:?} with nothing left to wait for"
                    );
                    return;
                }
            }
            panic!("no rest after 400 rounds: {:?}", self.m);
        }

        fn alive(&self, pid: Pid) -> bool {
            self.live.iter().any(|p| p.pid == pid)
        }
    }

    fn config() -> impl Strategy<Value = (MachineConfig, bool, bool)> {
        let post_start = prop::sample::select(vec![
            PostStartPlan::None,
            PostStartPlan::Direct,
            PostStartPlan::AfterCondition,
        ]);
        let timeout = Duration::from_secs(5);
        let drain = prop::sample::select(vec![
            DrainPlan::Off,
            DrainPlan::Barrier { timeout },
            DrainPlan::Script { timeout },
        ]);
        (
            post_start,
            drain,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(post_start, drain, errand, hold, stubborn)| {
                let cfg = MachineConfig {
                    stop_timeout: Duration::from_secs(3),
                    post_start_timeout: Duration::from_secs(8),
                    condition_interval: Duration::from_secs(1),
                    post_start,
                    drain,
                    errand,
                    stop_signal: Signal::SIGTERM,
                };
                (cfg, hold, stubborn)
            })
    }

    /// 1,000 lives by default; `PROPTEST_CASES` for the long form.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn random_lives_keep_the_invariants(
            (cfg, hold, stubborn) in config(),
            pokes in prop::collection::vec(poke(), 0..50),
            fates in prop::collection::vec(any::<u8>(), 1..16),
        ) {
            let mut w = World {
                m: Machine::new(cfg, hold),
                now: Instant::now(),
                next_pid: 100,
                live: Vec::new(),
                dead: Vec::new(),
                reaped: Vec::new(),
                drain_out: None,
                peers_asked: false,
                run_files: false,
                marker: hold,
                exited: None,
                fates,
                turn: 0,
                stubborn,
                intent: Some(!hold),
            };
            w.feed(Event::Boot);
            for p in pokes {
                w.poke(p);
            }
            w.settle();
            // The last command wins: the state at rest is the one it asked
            // for, unless container-run has exited (a SIGTERM, a crash, an
            // errand, a failed post-start or spawn).
            if w.exited.is_none() {
                let up = w.m.state() == State::Running;
                prop_assert_eq!(Some(up), w.intent, "the last word was not kept");
            }
        }
    }
}
