//! The pod-wide barrier's view of the other container-runs (SPEC section 8).
//! Peers are found at their rendezvous names (`crate::rendezvous`), listed
//! anew at each round, asked for their STATUS, and believed only when the
//! answer comes from root or container-run's own uid (the sender's
//! credentials): a job user's fake that claims to drain is no peer.
//!
//! The barrier remembers: a peer once seen draining, or with a drain
//! configured while this container-run settles, is waited for until it
//! says its drain is over or until it is gone, and gone means that no name
//! of its JOB/PROCESS is bound any more (its container-run has exited; a
//! rendezvous name vanishes with its holder). A full queue, an answer that
//! does not come in time or an untrusted answer is not "gone": only the
//! drain's deadline ends such a wait. A round is non-blocking; the event
//! loop polls its fd and its deadline.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::datagram;
use crate::machine::Peers;
use crate::protocol::{Drain, MAX_DATAGRAM, State, Status};
use crate::rendezvous::Pod;

/// How long a peer has to answer a round.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Why a peer holds the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Its drain script or its waits run.
    Draining,
    /// A drain configured, not begun, seen while this container-run
    /// settles: its SIGTERM may be on its way.
    Ready,
}

type Key = (String, String);

pub struct Barrier {
    pod: Pod,
    /// This container-run's own rendezvous name, never asked.
    own: Vec<u8>,
    uid: u32,
    held: BTreeMap<Key, Hold>,
    round: Option<Round>,
}

struct Round {
    sock: UnixDatagram,
    /// Names asked that no trusted answer has settled yet.
    outstanding: usize,
    answered: Vec<Key>,
    /// Untrusted or junk answers seen this round (logged once).
    ignored: usize,
    deadline: Instant,
    settling: bool,
}

impl Barrier {
    pub fn new(pod: Pod, own: Vec<u8>) -> Barrier {
        Barrier {
            pod,
            own,
            uid: nix::unistd::geteuid().as_raw(),
            held: BTreeMap::new(),
            round: None,
        }
    }

    /// Start a round: every peer of the pod is asked for its STATUS.
    /// `Some(peers)` when the answer is known at once (no peer to ask).
    pub fn ask(&mut self, now: Instant, settling: bool) -> Option<Peers> {
        let listing = match self.pod.list() {
            Ok(listing) => listing,
            Err(e) => {
                log::warn!(
                    "cannot list the pod's other container-runs: {}; not waiting for them",
                    crate::error::os_phrase(&e)
                );
                self.held.clear();
                return Some(Peers::default());
            }
        };
        if listing.truncated {
            log::warn!(
                "more than {} names look like the pod's container-runs: asking the first ones",
                crate::rendezvous::MAX_LISTED
            );
        }
        // Gone: no name of its JOB/PROCESS is bound any more.
        let pod = &self.pod;
        self.held
            .retain(|(job, process), _| listing.contains_prefix(&pod.prefix_for(job, process)));
        let names: Vec<&Vec<u8>> = listing.names.iter().filter(|n| **n != self.own).collect();
        let sock = match datagram::reply_socket() {
            Ok(sock) => sock,
            Err(e) => {
                log::warn!(
                    "cannot ask the pod's other container-runs: {}",
                    crate::error::os_phrase(&e)
                );
                return Some(self.tally(settling));
            }
        };
        // Refused, gone or full: no answer this round, nothing more.
        let outstanding = names
            .iter()
            .filter(|name| datagram::send_to_abstract(&sock, name, b"STATUS").is_ok())
            .count();
        if outstanding == 0 {
            return Some(self.tally(settling));
        }
        self.round = Some(Round {
            sock,
            outstanding,
            answered: Vec::new(),
            ignored: 0,
            deadline: now + ANSWER_WITHIN,
            settling,
        });
        None
    }

    /// The fd of the round that is out, for the event loop's poll.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.round.as_ref().map(|r| r.sock.as_fd())
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.round.as_ref().map(|r| r.deadline)
    }

    /// Read what has arrived; `Some(peers)` once the round is complete
    /// (every peer asked has answered, or its time is up).
    pub fn on_ready(&mut self, now: Instant) -> Option<Peers> {
        let mut round = self.round.take()?;
        self.read_answers(&mut round);
        if round.outstanding > 0 && now < round.deadline {
            self.round = Some(round);
            return None;
        }
        Some(self.tally(round.settling))
    }

    fn read_answers(&mut self, round: &mut Round) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while round.outstanding > 0 {
            let got = match datagram::recv(round.sock.as_fd(), &mut buf) {
                Ok(Some(got)) => got,
                Ok(None) | Err(_) => return,
            };
            let cred = got.peer.cred;
            let trusted = cred.is_some_and(|c| c.uid == 0 || c.uid == self.uid);
            let status = (got.len <= buf.len())
                .then(|| Status::from_line(&buf[..got.len]))
                .flatten();
            match status {
                // Only a trusted reply line settles a peer, once: anything
                // else (a job user's socket answering many times, junk)
                // must not end the round before the real peers answered.
                Some(status) if trusted => {
                    let key = (status.job.clone(), status.process.clone());
                    if !round.answered.contains(&key) {
                        round.answered.push(key.clone());
                        round.outstanding -= 1;
                        self.remember(key, &status, round.settling);
                    }
                }
                other => {
                    if round.ignored == 0 {
                        log_ignored(other.as_ref(), cred.as_ref(), trusted);
                    }
                    round.ignored += 1;
                }
            }
        }
    }

    fn remember(&mut self, key: Key, status: &Status, settling: bool) {
        match status.drain {
            Drain::Running => {
                self.held.insert(key, Hold::Draining);
            }
            // Past the settling window a peer still `ready` runs on (only
            // this container restarts).
            Drain::Ready if status.state == State::Running && settling => {
                self.held.insert(key, Hold::Ready);
            }
            _ => {
                self.held.remove(&key);
            }
        }
    }

    /// The machine's view: who is draining, who may be about to. A peer
    /// seen ready while settling that has not answered since the window
    /// closed is still waited for, as one draining.
    fn tally(&self, settling: bool) -> Peers {
        let mut peers = Peers::default();
        for hold in self.held.values() {
            match hold {
                Hold::Draining => peers.draining += 1,
                Hold::Ready if settling => peers.ready += 1,
                Hold::Ready => peers.draining += 1,
            }
        }
        peers
    }
}

fn log_ignored(status: Option<&Status>, cred: Option<&datagram::Cred>, trusted: bool) {
    let who = status.map_or_else(
        || "an answer that is no reply line".to_string(),
        |s| format!("an answer that claims to be {}/{}", s.job, s.process),
    );
    if trusted {
        log::warn!("ignoring {who}");
    } else {
        log::warn!(
            "ignoring {who}: it came from {}, not from root or container-run's uid",
            datagram::sender_words(cred)
        );
    }
}
