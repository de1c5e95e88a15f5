//! The drain and the pod-wide barrier (SPEC section 8), pure. First the
//! BOSH agent's contract: a call's arguments and environment, and what its
//! exit and stdout mean. Then the region of the machine that runs it after a
//! SIGTERM: one call of the script at a time, the wait it asks for, then the
//! barrier, all bounded by one deadline, stored once (the SIGTERM's instant;
//! the deadline is that plus `--drain-timeout`). A TERM or the job's exit
//! detaches a running script instead of making it something else: it may
//! finish, its verdict is only recorded, and the stop spares its group
//! meanwhile. Its status says where it stands (`running`, `waiting`, then
//! the result), which the machine reads to end the `draining` phase.
//! Invariants: while the drain is live, `next_deadline` is never later than
//! its deadline; once the script is reaped, no action names its group (what
//! it left there is reached through the tree).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Action, Actions, Child, Peers, Started, after, secs};
use crate::exit::Exit;
use crate::protocol::Drain;
use crate::tree::Pid;

/// How long after its SIGTERM a container-run also waits for peers whose
/// drain has not started yet: kubelet signals a pod's containers within
/// moments of each other.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How often peers are asked again while one of them holds the barrier.
pub const PEER_RECHECK: Duration = Duration::from_millis(250);

/// A call of the contract: the script's arguments, exactly as the agent
/// passed them.
pub type DrainCall = [&'static str; 2];
/// The first call, when the job is to be stopped.
pub const SHUTDOWN: DrainCall = ["job_shutdown", "hash_unchanged"];
/// A dynamic drain's follow-up, after its negative wait.
pub const CHECK_STATUS: DrainCall = ["job_check_status", "hash_unchanged"];

/// Added to container-run's environment for the script (exactly this text).
pub const JOB_STATE: (&str, &str) = ("BOSH_JOB_STATE", r#"{"persistent_disk":0}"#);
/// Removed from it: there is no next state in a pod.
pub const NO_NEXT_STATE: &str = "BOSH_JOB_NEXT_STATE";
/// More stdout than this is garbage, not an integer.
pub const MAX_OUTPUT: usize = 4096;

/// What the script asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait this long, then the drain is done.
    WaitThenDone(Duration),
    /// Wait this long, then call `job_check_status`.
    WaitThenCheck(Duration),
}

/// Judge one call: a non-zero exit, a death by signal, or anything on stdout
/// but one signed integer (surrounded by ASCII whitespace) has failed; the
/// error says which, for the one log line.
pub fn judge(exit: Exit, stdout: &[u8]) -> Result<Verdict, String> {
    let failed = |why: String| Err(format!("the drain script {why}"));
    if exit != Exit::Code(0) {
        return failed(exit.to_string());
    }
    if stdout.len() > MAX_OUTPUT {
        return failed(format!("printed more than {MAX_OUTPUT} bytes"));
    }
    let text = std::str::from_utf8(stdout).unwrap_or_default();
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let Ok(n) = text.parse::<i64>() else {
        return failed(format!("printed {text:?}, not one integer"));
    };
    let wait = Duration::from_secs(n.unsigned_abs());
    Ok(match n < 0 {
        true => Verdict::WaitThenCheck(wait),
        false => Verdict::WaitThenDone(wait),
    })
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Not begun, or over: `result` says how.
    Idle,
    /// A call is being started.
    Launching,
    /// A call: its pid, its exit once it is reaped, its output once read,
    /// and whether a TERM or the job's exit detached it (its verdict is
    /// then only recorded).
    Script(Pid, Option<Exit>, Option<Vec<u8>>, bool),
    /// The wait the script asked for, until the instant; then
    /// `job_check_status` if `true`, else the drain is done.
    Pause(Instant, bool),
    /// At the barrier: the next round of STATUS (`None` while one is out),
    /// and how many peers it waits for.
    Barrier(Option<Instant>, usize),
}

#[derive(Debug)]
pub struct Drainer {
    plan: DrainPlan,
    /// What STATUS says when nothing runs: `none` or `ready` before a
    /// SIGTERM, then the result.
    result: Drain,
    /// SIGTERM + `--drain-timeout`, and the end of the settling window:
    /// set once, at the SIGTERM.
    deadline: Option<(Instant, Instant)>,
    step: Step,
}

impl Drainer {
    pub fn new(plan: DrainPlan) -> Drainer {
        let script = matches!(plan, DrainPlan::Script { .. });
        let result = if script { Drain::Ready } else { Drain::None };
        let (deadline, step) = (None, Step::Idle);
        Drainer {
            plan,
            result,
            deadline,
            step,
        }
    }

    /// Whether a SIGTERM drains (a script or the barrier) before the stop.
    pub fn planned(&self) -> bool {
        self.plan != DrainPlan::Off
    }

    /// The SIGTERM: the script's first call, or the barrier at once.
    pub fn begin(&mut self, now: Instant) -> Actions {
        let (DrainPlan::Barrier { timeout } | DrainPlan::Script { timeout }) = self.plan else {
            return Vec::new();
        };
        self.deadline = Some((after(now, timeout), after(now, SETTLE)));
        if let DrainPlan::Barrier { .. } = self.plan {
            self.step = Step::Barrier(None, 0);
            return vec![Action::AskPeers];
        }
        self.step = Step::Launching;
        let line = format!("draining: running the drain script (deadline in {timeout:?})");
        vec![Action::Spawn(Child::Drain(SHUTDOWN)), say!(Info: "{line}")]
    }

    /// What became of a call's spawn: one that could not run has failed,
    /// a script that does not exist is skipped (the loop has said which).
    pub fn started(&mut self, started: Started) -> Actions {
        if self.step != Step::Launching {
            return Vec::new();
        }
        match started {
            Started::Pid(pid) => self.step = Step::Script(pid, None, None, false),
            Started::Failed(_) => return self.enter_barrier(Drain::Failed),
            Started::Missing => return self.enter_barrier(Drain::Skipped),
        }
        Vec::new()
    }

    /// The running call's pid until it is reaped.
    pub fn script(&self) -> Option<Pid> {
        match self.step {
            Step::Script(pid, None, ..) => Some(pid),
            _ => None,
        }
    }

    /// The group a stop spares: a detached call's, until it is judged.
    pub fn spare(&self) -> Option<Pid> {
        match self.step {
            Step::Script(pid, .., true) => Some(pid),
            _ => None,
        }
    }

    /// The running call's exit or its output came: once both are in, its
    /// verdict decides; a detached call's is only recorded (the job is
    /// stopping, so no wait it asks for matters).
    pub fn ended(&mut self, now: Instant, exit: Option<Exit>, out: Option<Vec<u8>>) -> Actions {
        let Step::Script(_, e, o, detached) = &mut self.step else {
            return Vec::new();
        };
        (*e, *o) = (e.or(exit), o.take().or(out));
        let (Some(exit), Some(output), detached) = (*e, o.as_deref(), *detached) else {
            return Vec::new();
        };
        let verdict = judge(exit, output);
        if !detached {
            return self.next(now, verdict);
        }
        self.step = Step::Idle;
        let (result, said) = match verdict {
            Ok(_) => (Drain::Done, say!(Info: "drain script finished")),
            Err(why) => (Drain::Failed, say!(Error: "drain failed: {why}")),
        };
        self.result = result;
        vec![said]
    }

    fn next(&mut self, now: Instant, verdict: Result<Verdict, String>) -> Actions {
        use Verdict::{WaitThenCheck, WaitThenDone};
        let (wait, check, line) = match verdict {
            Ok(WaitThenDone(w)) if w.is_zero() => return self.enter_barrier(Drain::Done),
            Ok(WaitThenDone(w)) => (w, false, format!("waiting {w:?} as the script asked")),
            Ok(WaitThenCheck(w)) => (w, true, format!("checking again in {w:?}")),
            Err(why) => {
                let said = say!(Error: "drain failed: {why}; stopping the job");
                return [vec![said], self.enter_barrier(Drain::Failed)].concat();
            }
        };
        self.step = Step::Pause(after(now, wait), check);
        vec![say!(Info: "drain: {line}")]
    }

    fn enter_barrier(&mut self, result: Drain) -> Actions {
        (self.result, self.step) = (result, Step::Barrier(None, 0));
        let result = result.as_str();
        let said = say!(Info: "drain {result}; checking the pod's other container-runs");
        vec![said, Action::AskPeers]
    }

    /// A round of STATUS is complete: the barrier holds while a peer
    /// drains, or, within the settling window, has a drain yet to begin.
    pub fn peers(&mut self, now: Instant, peers: Peers) -> Actions {
        let (Step::Barrier(None, busy), Some((deadline, settle))) = (&self.step, self.deadline)
        else {
            return Vec::new();
        };
        let waiting_for = peers.draining + if now < settle { peers.ready } else { 0 };
        let (busy, left) = (*busy, secs(deadline.saturating_duration_since(now)));
        if waiting_for == 0 {
            self.step = Step::Idle;
            return Vec::new();
        }
        self.step = Step::Barrier(Some(after(now, PEER_RECHECK).min(deadline)), waiting_for);
        if waiting_for == busy {
            return Vec::new();
        }
        let line = format!("waiting for {waiting_for} draining container-run(s) of the pod");
        vec![say!(Info: "{line} ({left} left)")]
    }

    /// Due deadlines: the drain's own first, then its step's.
    pub fn tick(&mut self, now: Instant) -> Actions {
        if self.step != Step::Idle && self.deadline.is_some_and(|(d, _)| d <= now) {
            return self.time_out();
        }
        match self.step {
            Step::Pause(until, true) if until <= now => {
                self.step = Step::Launching;
                vec![Action::Spawn(Child::Drain(CHECK_STATUS))]
            }
            Step::Pause(until, false) if until <= now => self.enter_barrier(Drain::Done),
            Step::Barrier(Some(at), busy) if at <= now => {
                self.step = Step::Barrier(None, busy);
                vec![Action::AskPeers]
            }
            _ => Vec::new(),
        }
    }

    fn time_out(&mut self) -> Actions {
        let what = match self.spare() {
            Some(_) => "killing its process group",
            None => "stopping the job",
        };
        let mut said = self.kill_script();
        (self.result, self.step) = (Drain::TimedOut, Step::Idle);
        said.push(say!(Error: "drain did not finish within its deadline: {what}"));
        said
    }

    /// SIGKILL to a running call's group; once it is reaped, to what it
    /// left in its group, found through the tree.
    fn kill_script(&self) -> Actions {
        match self.step {
            Step::Script(pid, None, ..) => vec![Action::Signal(pid, Signal::SIGKILL)],
            Step::Script(pid, ..) => vec![Action::SignalMembers(pid, Signal::SIGKILL)],
            _ => Vec::new(),
        }
    }

    /// TERM or the job's exit during the drain: a running call may finish,
    /// detached; a wait ends (`cancelled`); the barrier ends with the
    /// drain's result.
    pub fn detach(&mut self) -> Actions {
        match &mut self.step {
            Step::Script(.., detached) => *detached = true,
            Step::Launching | Step::Pause(..) => self.result = Drain::Cancelled,
            Step::Idle | Step::Barrier(..) => {}
        }
        if self.spare().is_some() {
            return vec![say!(Info: "the job stops; the drain script may finish")];
        }
        self.step = Step::Idle;
        Vec::new()
    }

    /// STOP: the drain ends at once, its running call killed.
    pub fn cancel(&mut self) -> Actions {
        let mut said = self.kill_script();
        if let Step::Script(..) = self.step {
            said.push(say!(Info: "STOP: killing the drain script"));
        }
        if !matches!(self.step, Step::Idle | Step::Barrier(..)) {
            self.result = Drain::Cancelled;
        }
        self.step = Step::Idle;
        said
    }

    pub fn status(&self) -> Drain {
        match self.step {
            Step::Idle => self.result,
            Step::Barrier(..) => Drain::Waiting,
            Step::Launching | Step::Script(..) | Step::Pause(..) => Drain::Running,
        }
    }

    /// What is left of the deadline while the drain runs or waits.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        let (deadline, _) = self.deadline.filter(|_| self.step != Step::Idle)?;
        Some(deadline.saturating_duration_since(now))
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let (deadline, _) = self.deadline.filter(|_| self.step != Step::Idle)?;
        match self.step {
            Step::Pause(at, _) | Step::Barrier(Some(at), _) => Some(at.min(deadline)),
            _ => Some(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_read_as_the_agent_reads_them() {
        let ok = Exit::Code(0);
        let s = Duration::from_secs;
        assert_eq!(judge(ok, b"0\n"), Ok(Verdict::WaitThenDone(s(0))));
        assert_eq!(judge(ok, b" 5 \n"), Ok(Verdict::WaitThenDone(s(5))));
        assert_eq!(judge(ok, b"+7"), Ok(Verdict::WaitThenDone(s(7))));
        assert_eq!(judge(ok, b"-3\n"), Ok(Verdict::WaitThenCheck(s(3))));
        for bad in [&b""[..], b"\n", b"1 2", b"one", b"1.5", b"0x10", b"\xff"] {
            assert!(judge(ok, bad).is_err(), "{bad:?}");
        }
        let long = vec![b' '; MAX_OUTPUT + 1];
        assert!(judge(ok, &long).unwrap_err().contains("more than"));
        assert!(judge(Exit::Code(1), b"0").unwrap_err().contains("status 1"));
        assert!(
            judge(Exit::Signal(9), b"0")
                .unwrap_err()
                .contains("signal 9")
        );
        assert_eq!(SHUTDOWN, ["job_shutdown", "hash_unchanged"]);
        assert_eq!(CHECK_STATUS, ["job_check_status", "hash_unchanged"]);
    }
}
