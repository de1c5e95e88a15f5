//! The post-start region (SPEC section 5), pure: after each start of the
//! job, the condition's tries and then the post-start, bounded together by
//! one deadline. It owns what STATUS says of the post-start and the process
//! group of the condition or post-start that runs, which it names until that
//! process is reaped and never after (a pid that is free again may be
//! someone else's group). Invariants: while the hook is live, its deadline
//! is in `next_deadline`; once cancelled or over, it asks for nothing. A
//! post-start that fails says so in its status (`failed`), which the
//! machine reads to stop the job.

use std::time::{Duration, Instant};

use super::{Action, Actions, Child, Started, after};
use crate::exit::Exit;
use crate::protocol::PostStart;
use crate::tree::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostStartPlan {
    None,
    Direct,
    AfterCondition,
}

#[derive(Debug)]
pub struct Hook {
    plan: PostStartPlan,
    timeout: Duration,
    interval: Duration,
    status: PostStart,
    /// The running condition's or post-start's pid, which is its process
    /// group, until that process is reaped.
    group: Option<Pid>,
    /// While the hook is live (`pending` or `running`): its deadline.
    deadline: Option<Instant>,
    /// After a failed try of the condition: when the next one is due.
    retry: Option<Instant>,
}

const STOPPING: &str = "stopping the job and exiting with 1";

impl Hook {
    pub fn new(plan: PostStartPlan, timeout: Duration, interval: Duration) -> Hook {
        let (status, group, deadline, retry) = (PostStart::None, None, None, None);
        Hook {
            plan,
            timeout,
            interval,
            status,
            group,
            deadline,
            retry,
        }
    }

    /// A start of the job: the condition's first try, or the post-start.
    pub fn begin(&mut self, now: Instant) -> Actions {
        let (status, child) = match self.plan {
            PostStartPlan::None => return Vec::new(),
            PostStartPlan::Direct => (PostStart::Running, Child::PostStart),
            PostStartPlan::AfterCondition => (PostStart::Pending, Child::Condition),
        };
        (self.status, self.deadline) = (status, Some(after(now, self.timeout)));
        vec![Action::Spawn(child)]
    }

    /// What became of the condition's or post-start's spawn. One that
    /// could not be executed (the loop has said why) is a failed try of the
    /// condition, a failed post-start. A post-start that does not exist is
    /// skipped, with no try of its condition.
    pub fn started(&mut self, now: Instant, started: Started) -> Actions {
        match (started, self.status) {
            _ if self.deadline.is_none() => {}
            (Started::Pid(pid), _) => self.group = Some(pid),
            (Started::Missing, _) => (self.status, self.deadline) = (PostStart::Skipped, None),
            (Started::Failed(_), PostStart::Pending) => {
                self.retry = Some(after(now, self.interval))
            }
            (Started::Failed(_), _) => return self.fail(Vec::new()),
        }
        Vec::new()
    }

    /// The condition's or post-start's process was reaped.
    pub fn exited(&mut self, now: Instant, exit: Exit) -> Actions {
        self.group = None;
        match (self.status, exit) {
            _ if self.deadline.is_none() => Vec::new(),
            (PostStart::Pending, Exit::Code(0)) => {
                self.status = PostStart::Running;
                vec![Action::Spawn(Child::PostStart)]
            }
            (PostStart::Pending, _) => {
                self.retry = Some(after(now, self.interval));
                vec![say!(Debug: "post-start condition {exit}")]
            }
            (_, Exit::Code(0)) => {
                (self.status, self.deadline) = (PostStart::Done, None);
                vec![say!(Info: "post-start done")]
            }
            _ => self.fail(vec![say!(Error: "post-start {exit}: {STOPPING}")]),
        }
    }

    fn fail(&mut self, said: Actions) -> Actions {
        (self.status, self.deadline, self.retry) = (PostStart::Failed, None, None);
        said
    }

    /// Due deadlines: the whole hook's, then the condition's next try.
    pub fn tick(&mut self, now: Instant) -> Actions {
        if self.deadline.is_some_and(|d| d <= now) {
            let t = self.timeout;
            return self.fail(vec![
                say!(Error: "post-start did not finish within {t:?}: {STOPPING}"),
            ]);
        }
        let due = self.retry.take_if(|at| *at <= now);
        due.map(|_| Action::Spawn(Child::Condition))
            .into_iter()
            .collect()
    }

    /// A stop: the hook asks for nothing more; its group, while it lives,
    /// is stopped with the job's.
    pub fn cancel(&mut self) {
        if self.deadline.take().is_some() {
            (self.status, self.retry) = (PostStart::Cancelled, None);
        }
    }

    pub fn group(&self) -> Option<Pid> {
        self.group
    }

    pub fn status(&self) -> PostStart {
        self.status
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = |d: Instant| self.retry.map_or(d, |at| at.min(d));
        self.deadline.map(retry)
    }
}
