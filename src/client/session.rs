//! Sending commands to container-runs and waiting, on all of them at once,
//! until each has reached the state asked for (SPEC section 6). No threads:
//! one `poll` over the sockets of every open session.
//!
//! What is believed (SPEC section 3): a reply counts only when the kernel
//! says it came from a trusted uid (`datagram::Trust`); anything else at a
//! target's place is no container-run, and a target that only such a
//! sender answered has failed. A queue that is full (a flood by someone
//! else) is waited on until it has room, within the answer's time, instead
//! of failing at once. Sessions are opened a bounded number at a time, so
//! that places that never answer cost time, never fds.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::line::{Line, send_error};
use super::reach::Reach;
use super::{Goal, Outcome, Seen, Target};
use crate::datagram::{self, Cred, Trust};
use crate::error::os_phrase;
use crate::protocol::{ControlCommand, Reply, Status};

/// How long a live container-run may take to answer a datagram before it is
/// reported as not answering.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// While waiting for a state, a STATUS is re-sent this often in case a
/// notification was lost (the supervisor never blocks to deliver one).
const RESEND_EVERY: Duration = Duration::from_millis(500);

/// Sessions open at once at most (each holds up to three fds per place).
const MAX_OPEN: usize = 64;

/// Datagrams read from one reply socket before the loop looks at its
/// deadlines again.
const READS_PER_TURN: usize = 64;

/// What to send and what to wait for.
#[derive(Debug, Clone, Copy)]
pub struct Drive<'a> {
    pub commands: &'a [ControlCommand],
    pub goal: Goal,
    pub timeout: Duration,
    pub trust: Trust,
    /// Readable when the wait is to end now (a signalfd for SIGINT).
    pub interrupt: Option<std::os::fd::BorrowedFd<'a>>,
}

struct Session {
    lines: Vec<Line>,
    /// The commands, kept until a place is pinned when there are several.
    commands: Vec<ControlCommand>,
    pinned: bool,
    goal: Goal,
    opened_at: Instant,
    sent_at: Instant,
    first: Option<Status>,
    last: Option<Status>,
    /// The first answer from a sender that is not believed.
    stranger: Option<(String, Option<Cred>)>,
    /// The commands have all gone out to the pinned place.
    delivered: bool,
    outcome: Option<Outcome>,
}

impl Drive<'_> {
    pub fn run(&self, targets: &[Target]) -> Vec<Outcome> {
        self.run_with_progress(targets, &mut |_, _| {})
    }

    /// `run`, calling `progress` with the time waited and what is known of
    /// every target after each turn of the loop while something is awaited.
    ///
    /// A first reply is awaited for `ANSWER_TIMEOUT` whatever `timeout`
    /// says: a container-run that answered has received the command, and a
    /// wait that then runs out is a timeout (exit 1), never "no answer".
    pub fn run_with_progress(
        &self,
        targets: &[Target],
        progress: &mut dyn FnMut(Duration, &[Seen]),
    ) -> Vec<Outcome> {
        let start = Instant::now();
        let mut sessions: Vec<Option<Session>> = targets.iter().map(|_| None).collect();
        let mut outcomes: Vec<Option<Outcome>> = targets.iter().map(|_| None).collect();
        let mut next = 0;
        let mut buf = vec![0u8; crate::protocol::MAX_DATAGRAM];
        let limit = open_limit();
        // Bounded: every turn either opens sessions, waits until the next
        // deadline, or consumes what arrived.
        loop {
            while next < targets.len() && fds_in_use(&sessions) + fds_for(&targets[next]) <= limit
                || next < targets.len() && open_count(&sessions) == 0
            {
                match self.open(&targets[next]) {
                    Ok(s) => sessions[next] = Some(s),
                    Err(outcome) => outcomes[next] = Some(*outcome),
                }
                next += 1;
            }
            let now = Instant::now();
            for (i, slot) in sessions.iter_mut().enumerate() {
                if let Some(s) = slot {
                    s.on_time(now, self.timeout);
                    if let Some(o) = s.outcome.take() {
                        outcomes[i] = Some(o);
                        *slot = None;
                    }
                }
            }
            let seen = seen(targets, &sessions, &outcomes);
            if seen.iter().any(|s| !s.done) {
                progress(now.duration_since(start), &seen);
            }
            if next == targets.len() && sessions.iter().all(Option::is_none) {
                break;
            }
            if self.wait(&mut sessions, &mut buf) {
                interrupted(&mut sessions, &mut outcomes);
                break;
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed("no outcome".into())))
            .collect()
    }

    /// A session for `target`, or its outcome when there is nowhere to
    /// ask (boxed: an outcome may carry a whole status).
    fn open(&self, target: &Target) -> Result<Session, Box<Outcome>> {
        let places = match &target.reach {
            Reach::At(places) => places,
            Reach::Nowhere(outcome) => return Err(Box::new(outcome.clone())),
        };
        let pinned = places.len() == 1;
        let first: Vec<ControlCommand> = if pinned {
            self.commands.to_vec()
        } else {
            vec![ControlCommand::Status]
        };
        let mut lines = Vec::new();
        let mut last_err = None;
        for place in places {
            match Line::open(place, &first) {
                Ok(line) => lines.push(line),
                Err(e) => last_err = Some(e),
            }
        }
        if lines.is_empty() {
            return Err(
                last_err.unwrap_or_else(|| Box::new(Outcome::NoAnswer("nowhere to ask".into())))
            );
        }
        let now = Instant::now();
        let mut s = Session {
            lines,
            commands: self.commands.to_vec(),
            pinned,
            goal: self.goal,
            opened_at: now,
            sent_at: now,
            first: None,
            last: None,
            stranger: None,
            delivered: false,
            outcome: None,
        };
        s.flush(target.by_socket);
        Ok(s)
    }

    /// Poll every open session until something arrives, a queue has room,
    /// or the next deadline comes; then read what arrived. `true` when the
    /// interrupt fired.
    fn wait(&self, sessions: &mut [Option<Session>], buf: &mut [u8]) -> bool {
        let now = Instant::now();
        let wake = sessions
            .iter()
            .flatten()
            .map(|s| s.wake(self.timeout))
            .min()
            .unwrap_or(now);
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        if let Some(fd) = self.interrupt {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            owners.push((usize::MAX, 0, false));
        }
        for (i, s) in sessions.iter().enumerate() {
            let Some(s) = s else { continue };
            for (j, line) in s.lines.iter().enumerate() {
                fds.push(PollFd::new(line.sock.as_fd(), PollFlags::POLLIN));
                owners.push((i, j, false));
                if !line.pending.is_empty() {
                    fds.push(PollFd::new(line.opened.waiter.as_fd(), PollFlags::POLLOUT));
                    owners.push((i, j, true));
                }
            }
        }
        let ms = wake.saturating_duration_since(now).as_millis() + 1;
        let timeout = PollTimeout::try_from(u32::try_from(ms).unwrap_or(u32::MAX))
            .unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
        let ready: Vec<(usize, usize, bool)> = owners
            .into_iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(o, _)| o)
            .collect();
        drop(fds);
        if ready.first().is_some_and(|&(i, _, _)| i == usize::MAX) {
            return true;
        }
        for (i, j, writable) in ready {
            let Some(s) = sessions[i].as_mut() else {
                continue;
            };
            if writable {
                s.flush(false);
            } else if s.outcome.is_none() && j < s.lines.len() {
                s.read(j, buf, &self.trust);
            }
        }
        false
    }
}

/// Ctrl-C: every target still open or not yet opened ends as interrupted.
fn interrupted(sessions: &mut [Option<Session>], outcomes: &mut [Option<Outcome>]) {
    for (slot, outcome) in sessions.iter_mut().zip(outcomes.iter_mut()) {
        if outcome.is_some() {
            continue;
        }
        *outcome = Some(match slot.take() {
            Some(s) => Outcome::Interrupted {
                sent: s.delivered,
                last: s.last,
            },
            None => Outcome::Interrupted {
                sent: false,
                last: None,
            },
        });
    }
}

fn open_count(sessions: &[Option<Session>]) -> usize {
    sessions.iter().filter(|s| s.is_some()).count()
}

/// Fds a session holds: a reply socket, a waiter and, for a socket file,
/// the file itself, per place.
fn fds_for(target: &Target) -> usize {
    match &target.reach {
        Reach::At(places) => 3 * places.len(),
        Reach::Nowhere(_) => 0,
    }
}

fn fds_in_use(sessions: &[Option<Session>]) -> usize {
    sessions.iter().flatten().map(|s| 3 * s.lines.len()).sum()
}

/// Fds the open sessions may hold together: `MAX_OPEN` sessions of one
/// place, fewer under a low fd limit.
fn open_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes one rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let soft = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    soft.saturating_sub(32).clamp(3, 3 * MAX_OPEN)
}

fn seen<'a>(
    targets: &'a [Target],
    sessions: &'a [Option<Session>],
    outcomes: &[Option<Outcome>],
) -> Vec<Seen<'a>> {
    targets
        .iter()
        .zip(sessions)
        .zip(outcomes)
        .map(|((target, s), o)| Seen {
            target,
            last: s.as_ref().and_then(|s| s.last.as_ref()),
            done: o.is_some(),
        })
        .collect()
}

impl Session {
    /// Send what waits on every line; a line that cannot be sent to is
    /// dropped, and with none left the session has its outcome.
    fn flush(&mut self, by_socket: bool) {
        let now = Instant::now();
        let mut failure = None;
        self.lines.retain_mut(|line| match line.flush(now) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(send_error(&line.place, e, by_socket));
                false
            }
        });
        if self.pinned && self.lines.iter().all(|l| l.pending.is_empty()) {
            self.delivered = true;
        }
        if self.lines.is_empty() && self.outcome.is_none() {
            self.outcome = Some(match (&self.last, failure) {
                (Some(s), _) => went_away(Some(s)),
                (None, Some(o)) => o,
                (None, None) => went_away(None),
            });
        }
    }

    /// Read what arrived on line `j`: at most `READS_PER_TURN` datagrams,
    /// so that strangers flooding the reply address (anyone can send to an
    /// abstract name) cannot keep the loop from its deadlines.
    fn read(&mut self, j: usize, buf: &mut [u8], trust: &Trust) {
        for _ in 0..READS_PER_TURN {
            if self.outcome.is_some() || j >= self.lines.len() {
                return;
            }
            let got = match datagram::recv(self.lines[j].sock.as_fd(), buf) {
                Ok(Some(got)) => got,
                Ok(None) => return,
                Err(e) => {
                    self.outcome = Some(Outcome::Failed(format!("receiving: {}", os_phrase(&e))));
                    return;
                }
            };
            if !trust.believes(got.peer.cred.as_ref()) {
                if self.stranger.is_none() {
                    self.stranger = Some((self.lines[j].place.shown(), got.peer.cred));
                }
                continue;
            }
            match (got.len <= buf.len())
                .then(|| Reply::parse(&buf[..got.len]))
                .flatten()
            {
                Some(Reply::Refused) => {
                    self.outcome = Some(Outcome::Failed(
                        "permission denied: run as the socket's owner or group".into(),
                    ));
                }
                Some(Reply::Status(status)) => self.on_status(j, status),
                None => {}
            }
        }
    }

    /// A believed answer. With several places, the first to answer is the
    /// one the commands go to (an answer to the probing STATUS says nothing
    /// about them yet).
    fn on_status(&mut self, j: usize, status: Status) {
        if !self.pinned {
            let line = self.lines.swap_remove(j);
            self.lines = vec![line];
            self.pinned = true;
            // The probing STATUS was the command itself.
            self.delivered = self.commands == [ControlCommand::Status];
            if !self.delivered {
                self.lines[0].pending = self.commands.iter().copied().collect();
                self.sent_at = Instant::now();
                self.flush(false);
                return;
            }
        }
        self.on_reply(status);
    }

    fn on_reply(&mut self, status: Status) {
        if self.first.is_none() {
            self.first = Some(status.clone());
        }
        // A START that container-run ignored because it is shutting down
        // (a drain, a SIGTERM, a crash) will never be reached: say so now.
        // (`wait` sends no START: a draining job is running to it.)
        if self.commands.contains(&ControlCommand::Start) && status.exiting {
            self.outcome = Some(Outcome::Failed(format!(
                "START ignored: container-run is shutting down ({})",
                status.state.as_str()
            )));
            self.last = Some(status);
            return;
        }
        // Reached only once every command went out: an answer to the first
        // of two (TERM, START) says nothing of the second.
        if self.delivered && self.goal.reached(&status, self.first.as_ref()) {
            self.outcome = Some(Outcome::Done(status.clone()));
        }
        self.last = Some(status);
    }

    /// Deadlines and the periodic STATUS.
    fn on_time(&mut self, now: Instant, timeout: Duration) {
        if self.outcome.is_some() {
            return;
        }
        let answer_due = now >= self.opened_at + ANSWER_TIMEOUT;
        if self.last.is_none() {
            if answer_due {
                self.outcome = Some(self.unanswered());
            }
        } else if !self.delivered && answer_due {
            self.outcome = Some(self.undelivered());
        } else if now >= self.opened_at + timeout.min(crate::cli::MAX_DURATION) {
            self.outcome = Some(Outcome::TimedOut(self.last.clone()));
        }
        // Also before a first answer: one that was lost is asked for again.
        if self.outcome.is_none() && self.pinned && now.duration_since(self.sent_at) >= RESEND_EVERY
        {
            if let Some(line) = self.lines.first_mut()
                && line.pending.is_empty()
            {
                line.pending.push_back(ControlCommand::Status);
            }
            self.sent_at = now;
            self.flush(false);
        }
    }

    /// When the next thing is due for this session.
    fn wake(&self, timeout: Duration) -> Instant {
        let limit = if self.last.is_none() {
            self.opened_at + ANSWER_TIMEOUT
        } else {
            self.opened_at + timeout.min(crate::cli::MAX_DURATION)
        };
        if self.pinned {
            limit.min(self.sent_at + RESEND_EVERY)
        } else {
            limit
        }
    }

    /// An answer came, but a later command never found room in the queue.
    fn undelivered(&self) -> Outcome {
        let (what, place) = self
            .lines
            .iter()
            .find_map(|l| {
                l.pending
                    .iter()
                    .find(|c| **c != ControlCommand::Status)
                    .map(|c| (c.as_str(), l.place.shown()))
            })
            .unwrap_or(("a command", String::new()));
        Outcome::Failed(format!(
            "{what} was not sent: the queue of {place} stayed full (container-run hangs, or someone floods it)"
        ))
    }

    /// Nothing believed came in time: say what did.
    fn unanswered(&self) -> Outcome {
        if let Some((place, cred)) = &self.stranger {
            return Outcome::NoAnswer(format!(
                "{place} answered as {}, which is not believed: no container-run answered",
                datagram::sender_words(cred.as_ref())
            ));
        }
        let within = super::format_duration(ANSWER_TIMEOUT);
        match self.lines.iter().find(|l| l.full_since.is_some()) {
            Some(line) => Outcome::NoAnswer(format!(
                "nobody reads {}: its queue is full (container-run hangs or is stopped)",
                line.place.shown()
            )),
            None => Outcome::NoAnswer(format!(
                "no answer within {within} on {}",
                self.lines
                    .first()
                    .map_or_else(String::new, |l| l.place.shown())
            )),
        }
    }
}

/// The socket stopped answering. Before any reply: nobody is there (3).
/// After one: the command was received, and then container-run went (it
/// exits after a crash or a SIGTERM); a failure (1), never "no answer".
fn went_away(last: Option<&Status>) -> Outcome {
    match last {
        None => Outcome::NoAnswer("container-run went away from its socket".into()),
        Some(s) => Outcome::Failed(format!(
            "container-run went away from its socket after answering (last seen {})",
            s.state.as_str()
        )),
    }
}
