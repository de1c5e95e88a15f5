//! The supervisor's state machine (SPEC sections 4, 5, 8 and 9), pure: it
//! makes no system call and writes no log line. Three regions, in the
//! manner of s6-supervise's table:
//! - the job's phase, here: `Stopped`, `Running`, `Draining`, `Stopping`
//!   (with `Then`, what follows the stop);
//! - the post-start (`hook`): its status, its running group, its deadline;
//! - the drain and the barrier (`drain`): the script, its waits, the
//!   barrier, one deadline.
//!
//! `Machine::step` is one `match (phase, event)` with every pair written
//! out (an ignored pair says `nop`); a reaped pid is first resolved to whose
//! it was (`reaped`, a `match (phase, whose)`). The rules that cross regions
//! follow the tables; each region returns its actions, and `next_deadline`
//! is the one place that says which deadline comes next. A line worth
//! logging travels as `Action::Log`; the loop writes it.
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
//! - a command's signals and spawns come before anything else it causes.

use std::time::{Duration, Instant};

use log::Level;
use nix::sys::signal::Signal;

use crate::exit::{self, Exit};
use crate::protocol::{ControlCommand, Drain, PostStart, State};
use crate::tree::Pid;

mod drain;
mod hook;

pub use drain::{DrainCall, DrainPlan, JOB_STATE, MAX_OUTPUT, NO_NEXT_STATE};
use drain::{Drainer, Outcome as DrainSaid};
pub use hook::PostStartPlan;
use hook::{Hook, Outcome as HookSaid};

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
    /// The STOP marker could not be written: the hold will not survive a
    /// container restart.
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
    Log(Level, String),
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

/// The job's phase. The job's process itself (pid and start) is
/// `Machine::job`: it lives in `Running` and `Draining`, and in `Stopping`
/// until it is reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Stopped,
    Running,
    /// After a SIGTERM, while the drain or the barrier holds the stop.
    Draining,
    Stopping(Stop),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stop {
    then: Then,
    /// When SIGKILL is due; `None` once it went out.
    kill_at: Option<Instant>,
    /// The groups the stop's first signal reached: the sweep at the job's
    /// exit leaves them out.
    signalled: Vec<Pid>,
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
    /// The job's process while it lives, and when it started.
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

fn say(level: Level, text: String) -> Action {
    Action::Log(level, text)
}

fn info(text: String) -> Action {
    say(Level::Info, text)
}

fn error(text: String) -> Action {
    say(Level::Error, text)
}

/// An ignored pair of the table.
fn nop() -> Vec<Action> {
    Vec::new()
}

fn join(mut first: Vec<Action>, then: Vec<Action>) -> Vec<Action> {
    first.extend(then);
    first
}

const GONE: &str = "once its tree is gone";

fn start_ignored() -> Vec<Action> {
    vec![info("START ignored: container-run is shutting down".into())]
}

impl Machine {
    /// `hold` says whether the STOP marker was found.
    pub fn new(cfg: MachineConfig, hold: bool) -> Machine {
        let (timeout, interval) = (cfg.post_start_timeout, cfg.condition_interval);
        Machine {
            hook: Hook::new(cfg.post_start, timeout, interval),
            drain: Drainer::new(cfg.drain),
            cfg,
            phase: Phase::Stopped,
            job: None,
            hold,
            starts: 0,
            last_exit: None,
        }
    }

    /// The table: every (phase, event) pair, each a named step or `nop`.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        use Child::{Condition as Cond, Drain as DrainScript, Main, PostStart as Post};
        use ControlCommand::{Quit, Start, Status, Stop, Term};
        use Event::*;
        use State::{Draining, Running, Stopped, Stopping};
        match (self.state(), event) {
            (Stopped, Boot) => self.boot(),
            (Running | Draining | Stopping, Boot) => nop(),
            (Stopped, Command(Start)) => join(vec![Action::Spawn(Main)], self.unhold()),
            (Running, Command(Start)) => self.unhold(),
            (Draining, Command(Start)) => start_ignored(),
            (Stopping, Command(Start)) => self.stop_again(Then::Start),
            (Stopped, Command(Stop)) => self.hold(),
            (Running, Command(Stop)) => join(self.stop_job(now, Then::Stay), self.hold()),
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
            (Draining, Shutdown(_)) => self.already_draining(now),
            (Stopping, Shutdown(_)) => self.already_stopping(now),
            (Stopped, Forward(_)) => nop(),
            (Running | Draining | Stopping, Forward(sig)) => self.signal(sig, false),
            (Stopped, Spawned(Main, started)) => self.main_started(now, started),
            (Running | Draining | Stopping, Spawned(Main, _)) => nop(),
            (Running, Spawned(Cond | Post, s)) => self.with_hook(now, |h| h.started(now, s)),
            (Stopped | Draining | Stopping, Spawned(Cond | Post, _)) => nop(),
            (Draining, Spawned(DrainScript(_), started)) => self.drain.started(started),
            (Stopped | Running | Stopping, Spawned(DrainScript(_), _)) => nop(),
            (Stopped, Reaped(..)) => nop(),
            (Running | Draining | Stopping, Reaped(pid, exit)) => self.reaped(now, pid, exit),
            (Stopping, Drained(children_left)) => self.drained(children_left),
            (Stopped | Running | Draining, Drained(_)) => nop(),
            (Draining | Stopping, DrainOutput(out)) => self.call_ended(now, None, Some(out)),
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
    fn reaped(&mut self, now: Instant, pid: Pid, exit: Exit) -> Vec<Action> {
        if self.job.is_some_and(|(main, _)| main == pid) {
            return match self.phase {
                Phase::Running => self.main_ended(now, pid, exit),
                Phase::Draining => self.main_ended_in_drain(now, pid, exit),
                Phase::Stopping(_) => self.main_gone(pid, exit),
                Phase::Stopped => nop(),
            };
        }
        if self.hook.group() == Some(pid) {
            return self.with_hook(now, |h| h.exited(now, exit));
        }
        if self.drain.script() == Some(pid) {
            return self.call_ended(now, Some(exit), None);
        }
        nop()
    }

    // --- the steps, and the rules that cross regions ---

    fn boot(&self) -> Vec<Action> {
        let spawn = (!self.hold).then_some(Action::Spawn(Child::Main));
        spawn.into_iter().collect()
    }

    fn hold(&mut self) -> Vec<Action> {
        self.hold = true;
        vec![Action::WriteHold]
    }

    fn unhold(&mut self) -> Vec<Action> {
        let held = std::mem::replace(&mut self.hold, false);
        held.then_some(Action::RemoveHold).into_iter().collect()
    }

    fn hold_not_written(&mut self) -> Vec<Action> {
        self.hold = false;
        let why = "could not be written: a container restart will run the job again";
        vec![error(format!("the STOP marker {why}"))]
    }

    /// The last word during a stop: START (`Then::Start`), STOP or TERM
    /// (`Then::Stay`), SIGTERM; never once container-run is exiting (a
    /// crash's status stays). A START then is ignored.
    fn stop_again(&mut self, word: Then) -> Vec<Action> {
        match &mut self.phase {
            Phase::Stopping(stop) if matches!(stop.then, Then::Stay | Then::Start) => {
                stop.then = word;
                if word == Then::Start {
                    self.unhold()
                } else {
                    nop()
                }
            }
            _ if word == Then::Start => start_ignored(),
            _ => nop(),
        }
    }

    /// STOP during a stop also ends a drain script that a TERM let run on.
    fn stop_while_stopping(&mut self) -> Vec<Action> {
        self.stop_again(Then::Stay);
        join(self.drain.cancel(), self.hold())
    }

    /// An errand's container-run ends with the errand on TERM or SIGTERM.
    fn errand_or(&self, then: Then) -> Then {
        self.cfg.errand.then_some(Then::ExitWithJob).unwrap_or(then)
    }

    /// What a SIGTERM or SIGINT leads to once the job has stopped.
    fn shutdown_then(&self) -> Then {
        self.errand_or(Then::Exit(exit::OK))
    }

    /// What `then` does once nothing of the job is left: an errand's own
    /// status is 143 when it never ran (SPEC section 9).
    fn end(&self, then: Then) -> Vec<Action> {
        let errand = self
            .last_exit
            .map_or(exit::ERRAND_NEVER_RAN, exit::from_wait);
        match then {
            Then::Stay => nop(),
            Then::Start => vec![Action::Spawn(Child::Main)],
            Then::Exit(code) => vec![Action::Exit(code)],
            Then::ExitWithJob => vec![Action::Exit(errand)],
        }
    }

    /// SIGTERM while running: the drain and the barrier first, when planned;
    /// a running post-start is cancelled first, as a STOP cancels it.
    fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        if !self.drain.planned() {
            return self.stop_job(now, self.shutdown_then());
        }
        let hook = self.hook.group();
        let cancel = hook.map(|g| Action::Terminate(None, Some(g), Signal::SIGTERM));
        self.hook.cancel();
        self.phase = Phase::Draining;
        join(cancel.into_iter().collect(), self.drain.begin(now))
    }

    fn already_draining(&self, now: Instant) -> Vec<Action> {
        let left = secs(self.drain.left(now).unwrap_or_default());
        vec![info(format!(
            "already draining: {left} left before the stop"
        ))]
    }

    /// A repeated SIGTERM neither restarts the timeout nor replaces a crash
    /// status already recorded.
    fn already_stopping(&mut self, now: Instant) -> Vec<Action> {
        self.stop_again(self.shutdown_then());
        let line = match self.stop_left(now) {
            Some(left) => format!("SIGKILL in {}", secs(left)),
            None => "SIGKILL sent, waiting for the last processes".into(),
        };
        vec![info(format!("already stopping: {line}"))]
    }

    /// STOP during the drain: it ends at once, and the job stops.
    fn stop_the_drain(&mut self, now: Instant) -> Vec<Action> {
        let killed = self.drain.cancel();
        let stop = self.stop_job(now, self.shutdown_then());
        join(join(killed, stop), self.hold())
    }

    /// TERM during the drain (a drain script's own `bpm stop`): the job
    /// stops, and the script may run to its end.
    fn term_the_drain(&mut self, now: Instant) -> Vec<Action> {
        self.drain.detach();
        let line = "TERM during the drain: stopping the job; the drain script may finish";
        let said = self.drain.spare().map(|_| info(line.into()));
        let stop = self.stop_job(now, self.shutdown_then());
        join(stop, said.into_iter().collect())
    }

    /// The groups whose leaders live: the job's, and the hook's if asked.
    fn live_groups(&self, hook_too: bool) -> Vec<Pid> {
        let hook = self.hook.group().filter(|_| hook_too);
        self.job
            .map(|(main, _)| main)
            .into_iter()
            .chain(hook)
            .collect()
    }

    /// QUIT (to the job's and the hook's groups) or a forwarded signal (to
    /// the job's).
    fn signal(&self, sig: Signal, hook_too: bool) -> Vec<Action> {
        let groups = self.live_groups(hook_too).into_iter();
        groups.map(|g| Action::Signal(g, sig)).collect()
    }

    fn main_started(&mut self, now: Instant, started: Started) -> Vec<Action> {
        let code = match started {
            Started::Pid(pid) => {
                (self.phase, self.job) = (Phase::Running, Some((pid, now)));
                self.starts += 1;
                return join(vec![Action::WriteRunFiles(pid)], self.hook.begin(now));
            }
            Started::Failed(code) => code,
            Started::Missing => exit::NOT_FOUND,
        };
        self.last_exit = Some(Exit::Code(code));
        vec![Action::Exit(code)]
    }

    /// The hook's outcome: a failed post-start stops the job, and
    /// container-run exits 1.
    fn with_hook(&mut self, now: Instant, f: impl FnOnce(&mut Hook) -> HookSaid) -> Vec<Action> {
        match f(&mut self.hook) {
            HookSaid::Go(acts) => acts,
            HookSaid::Failed(said) => join(self.stop_job(now, Then::Exit(exit::FAILURE)), said),
        }
    }

    fn call_ended(
        &mut self,
        now: Instant,
        exit: Option<Exit>,
        out: Option<Vec<u8>>,
    ) -> Vec<Action> {
        self.with_drain(now, |d| d.ended(now, exit, out))
    }

    /// The drain's outcome: once it and the barrier are over, the job
    /// stops; what a detached script left is stopped with the rest.
    fn with_drain(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Drainer) -> DrainSaid,
    ) -> Vec<Action> {
        match f(&mut self.drain) {
            DrainSaid::Go(acts) => acts,
            DrainSaid::Stop(said) => join(self.stop_job(now, self.shutdown_then()), said),
            DrainSaid::Released(said, group) => {
                let killed = self.stop().is_some_and(|stop| stop.kill_at.is_none());
                let signal = if killed {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                join(vec![Action::SignalMembers(group, signal)], said)
            }
        }
    }

    /// Stop the job from `Running` or `Draining`: the stop's first signal,
    /// to the groups whose leaders live.
    fn stop_job(&mut self, now: Instant, then: Then) -> Vec<Action> {
        self.hook.cancel();
        let (job, hook) = (self.job.map(|(main, _)| main), self.hook.group());
        let signalled = job.into_iter().chain(hook).collect();
        let kill_at = Some(after(now, self.cfg.stop_timeout));
        self.phase = Phase::Stopping(Stop {
            then,
            kill_at,
            signalled,
        });
        vec![Action::Terminate(job, hook, self.cfg.stop_signal)]
    }

    /// At the exit of the job's process `job`: what escaped its group, and
    /// what is left of it.
    fn sweep(&self, job: Pid, skip: Vec<Pid>) -> Action {
        Action::Sweep(job, self.cfg.stop_signal, skip, self.drain.spare())
    }

    /// Stop what is left once the job's process has exited by itself while
    /// running or draining: the hook's group, then the sweep.
    fn stop_after_exit(&mut self, now: Instant, exit: Exit, then: Then) -> Vec<Action> {
        let Some((pid, _)) = self.job.take() else {
            return nop();
        };
        self.last_exit = Some(exit);
        let hook = self.hook.group();
        let first = self
            .stop_job(now, then)
            .into_iter()
            .filter(|_| hook.is_some());
        let sweep = self.sweep(pid, hook.into_iter().collect());
        first.chain([sweep]).collect()
    }

    /// The job's process ended by itself while running: an errand's
    /// container-run exits with its status, and so does any other after a
    /// crash; after exit 0 it waits for START.
    fn main_ended(&mut self, now: Instant, pid: Pid, exit: Exit) -> Vec<Action> {
        let (status, errand) = (exit::from_wait(exit), self.cfg.errand);
        let line = match (errand, status) {
            (true, _) => info(format!(
                "errand process {pid} {exit}: exiting with {status} {GONE}"
            )),
            (false, 0) => info(format!("process {pid} {exit}: stopped, waiting for START")),
            _ => error(format!(
                "process {pid} {exit}: stopping and exiting with {status}"
            )),
        };
        let then = if status == 0 && !errand {
            Then::Stay
        } else {
            Then::Exit(status)
        };
        join(vec![line], self.stop_after_exit(now, exit, then))
    }

    /// The job's own exit during the drain ends any wait; a running script
    /// may finish; container-run exits with the job's status.
    fn main_ended_in_drain(&mut self, now: Instant, pid: Pid, exit: Exit) -> Vec<Action> {
        self.drain.detach();
        let line = info(format!("the job's process {pid} {exit} during the drain"));
        let then = Then::Exit(exit::from_wait(exit));
        join(vec![line], self.stop_after_exit(now, exit, then))
    }

    /// The job's process ended during its stop: what escaped its group is
    /// swept now, unless SIGKILL went out already.
    fn main_gone(&mut self, pid: Pid, exit: Exit) -> Vec<Action> {
        (self.job, self.last_exit) = (None, Some(exit));
        let line = info(format!("the job's process {pid} {exit}"));
        let skip = match &mut self.phase {
            Phase::Stopping(stop) if stop.kill_at.is_some() => std::mem::take(&mut stop.signalled),
            _ => return vec![line],
        };
        vec![line, self.sweep(pid, skip)]
    }

    fn kill_tree(&self) -> Action {
        Action::KillTree(self.live_groups(true), self.drain.spare())
    }

    /// A detached drain script's deadline, then the stop's SIGKILL.
    fn stopping_tick(&mut self, now: Instant) -> Vec<Action> {
        let acts = self.with_drain(now, |d| d.tick(now));
        match &mut self.phase {
            Phase::Stopping(stop) if stop.kill_at.is_some_and(|at| at <= now) => {
                stop.kill_at = None;
            }
            _ => return acts,
        }
        let t = self.cfg.stop_timeout;
        let line = info(format!(
            "stop timeout of {t:?} reached: killing what is left"
        ));
        join(acts, vec![self.kill_tree(), line])
    }

    /// Every exited child is reaped: with nothing left, the stop is over;
    /// after SIGKILL, what was re-parented here since is killed too.
    fn drained(&mut self, children_left: bool) -> Vec<Action> {
        let Some(&Stop { then, kill_at, .. }) = self.stop() else {
            return nop();
        };
        match (children_left, kill_at) {
            (true, None) => return vec![self.kill_tree()],
            (true, Some(_)) => return nop(),
            (false, _) => {}
        }
        (self.phase, self.job) = (Phase::Stopped, None);
        let how = self
            .last_exit
            .map_or("never started".into(), |e| e.to_string());
        let whose = if then == Then::ExitWithJob {
            "errand"
        } else {
            "job"
        };
        let next = self.end(then);
        let what_next = match next.first() {
            Some(Action::Exit(code)) => format!("; exiting with {code}"),
            Some(_) => "; starting again".into(),
            None => String::new(),
        };
        let line = info(format!("stopped (the {whose}'s process {how}){what_next}"));
        join(vec![Action::RemoveRunFiles, line], next)
    }

    fn stop(&self) -> Option<&Stop> {
        match &self.phase {
            Phase::Stopping(stop) => Some(stop),
            Phase::Stopped | Phase::Running | Phase::Draining => None,
        }
    }

    /// While stopping and before SIGKILL: what is left until it.
    fn stop_left(&self, now: Instant) -> Option<Duration> {
        let kill_at = self.stop()?.kill_at;
        kill_at.map(|at| at.saturating_duration_since(now))
    }

    /// The earliest instant at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kill_at = self.stop().and_then(|stop| stop.kill_at);
        let waits = [
            kill_at,
            self.hook.next_deadline(),
            self.drain.next_deadline(),
        ];
        waits.into_iter().flatten().min()
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let then = self.stop().map(|stop| stop.then);
        let exiting = matches!(then, Some(Then::Exit(_) | Then::ExitWithJob));
        Snapshot {
            state: self.state(),
            pid: self.job.map(|(main, _)| main),
            starts: self.starts,
            hold: self.hold,
            pending_start: then == Some(Then::Start),
            exiting: exiting || self.phase == Phase::Draining,
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
        match self.phase {
            Phase::Stopped => State::Stopped,
            Phase::Running => State::Running,
            Phase::Draining => State::Draining,
            Phase::Stopping(_) => State::Stopping,
        }
    }
}
