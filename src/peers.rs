//! The pod-wide barrier's view of the other container-runs (SPEC section 8).
//! Peers are found at their rendezvous names (`crate::rendezvous`), listed
//! anew at each round without the names of owners it does not believe
//! (root and container-run's own uid), asked for their STATUS, and
//! believed only when the answer comes from root or container-run's own
//! uid (the sender's credentials): a job user's fake that claims to drain
//! is no peer.
//!
//! Each peer is asked from a socket of its own (what arrives there answers
//! that peer, or is ignored), and a second socket connected to its name
//! says by its writability when a full queue at the peer has room again:
//! a flood of the peer's queue delays the question within the round
//! instead of dropping it. The peer answers from a fresh socket of its
//! own, as it answers every client, so nothing the peer's other senders
//! leave unread can hold its answer back.
//!
//! The barrier remembers, by JOB/PROCESS (a name's TARGET part): a peer
//! once seen draining, or with a drain configured while this container-run
//! settles, is waited for until it says its drain is over or until it is
//! gone, and gone means that no name of its JOB/PROCESS is bound any more
//! (its container-run has exited; a rendezvous name vanishes with its
//! holder). A peer whose name's owner the kernel vouches for and that
//! gives no believed answer in a round (a queue kept full, answers that
//! never arrive) may be draining: it is waited for as one draining, until
//! it answers or is gone. Only the drain's deadline ends such waits. A round is non-blocking; the event loop polls its fd (an epoll
//! instance over the round's sockets) and its deadline.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{MsgFlags, UnixAddr, connect, sendto};

use crate::datagram::{self, Trust};
use crate::logger::Limited;
use crate::machine::Peers;
use crate::protocol::{Drain, MAX_DATAGRAM, State, Status};
use crate::rendezvous::{Listing, Pod};

/// Datagrams read from one peer's socket before the loop looks at its
/// deadlines again.
const READS_PER_TURN: usize = 64;

/// How long a peer has to answer a round.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Peers asked in one round at most, a socket each: a pod has a few
/// containers, and only names of believed owners are asked.
const MAX_ASKED: usize = 64;

/// Why a peer holds the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Its drain script or its waits run.
    Draining,
    /// A drain configured, not begun, seen while this container-run
    /// settles: its SIGTERM may be on its way.
    Ready,
    /// No believed answer from a name a believed uid holds: it may drain.
    Silent,
}

/// A peer: its rendezvous prefix `container-run/POD/TARGET/`, one per
/// JOB/PROCESS.
type Key = String;

pub struct Barrier {
    pod: Pod,
    /// This container-run's own rendezvous name, never asked.
    own: Vec<u8>,
    trust: Trust,
    held: BTreeMap<Key, Hold>,
    round: Option<Round>,
    warned: Limited,
    silence_warned: Limited,
}

struct Round {
    epoll: Epoll,
    asks: Vec<Ask>,
    /// Untrusted or junk answers seen this round (logged once).
    ignored: usize,
    deadline: Instant,
    settling: bool,
}

/// One peer asked this round.
struct Ask {
    key: Key,
    name: UnixAddr,
    /// Bound to an address of its own: the question goes from here, the
    /// answer comes here.
    sock: UnixDatagram,
    /// Connected to the peer's name, never sent from: writable when the
    /// peer's queue has room. Dropped once the question is out.
    waiter: Option<UnixDatagram>,
    /// The kernel says a believed uid owns the name: silence may be a
    /// flood, not absence.
    vouched: bool,
    /// A believed answer came (or the peer went away): nothing more to
    /// wait for.
    settled: bool,
}

impl Ask {
    fn open(name: &[u8], key: Key, vouched: bool) -> io::Result<Ask> {
        let name = UnixAddr::new_abstract(name)?;
        let waiter = UnixDatagram::unbound()?;
        connect(waiter.as_raw_fd(), &name)?;
        waiter.set_nonblocking(true)?;
        Ok(Ask {
            key,
            name,
            sock: datagram::reply_socket()?,
            waiter: Some(waiter),
            vouched,
            settled: false,
        })
    }

    fn sent(&self) -> bool {
        self.waiter.is_none()
    }

    /// Send the STATUS unless the peer's queue is full.
    fn try_send(&mut self, epoll: &Epoll) {
        let Some(waiter) = &self.waiter else {
            return;
        };
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendto(self.sock.as_raw_fd(), b"STATUS", &self.name, flags) {
            Ok(_) => {
                let _ = epoll.delete(waiter);
                self.waiter = None;
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // Gone since it was listed: the next listing says so.
            Err(_) => self.settle(epoll),
        }
    }

    fn settle(&mut self, epoll: &Epoll) {
        self.settled = true;
        let _ = epoll.delete(&self.sock);
        if let Some(waiter) = self.waiter.take() {
            let _ = epoll.delete(&waiter);
        }
    }
}

/// `container-run/POD/TARGET/` of a name.
fn key_of(name: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(name).ok()?;
    let end = text.match_indices('/').nth(2)?.0;
    Some(text[..=end].to_string())
}

impl Barrier {
    pub fn new(pod: Pod, own: Vec<u8>, trust: Trust) -> Barrier {
        Barrier {
            pod,
            own,
            trust,
            held: BTreeMap::new(),
            round: None,
            warned: Limited::default(),
            silence_warned: Limited::default(),
        }
    }

    /// Start a round: every peer of the pod is asked for its STATUS.
    /// `Some(peers)` when the answer is known at once (no peer to ask).
    pub fn ask(&mut self, now: Instant, settling: bool) -> Option<Peers> {
        let listing = match self.pod.list_believed(&self.trust) {
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
        self.note_listing(&listing, now);
        // Gone: no name of its JOB/PROCESS is bound any more.
        self.held.retain(|key, _| listing.contains_prefix(key));
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(epoll) => epoll,
            Err(e) => {
                log::warn!("cannot ask the pod's other container-runs: {e}");
                return Some(self.tally(settling));
            }
        };
        let mut asks = Vec::new();
        let others = listing
            .names
            .iter()
            .zip(&listing.owners)
            .filter(|(name, _)| **name != self.own);
        for (name, owner) in others.take(MAX_ASKED) {
            // Refused: gone since it was listed.
            let Some(ask) = key_of(name).and_then(|k| Ask::open(name, k, owner.is_some()).ok())
            else {
                continue;
            };
            let watched = ask.waiter.as_ref().is_some_and(|w| {
                epoll
                    .add(w, EpollEvent::new(EpollFlags::EPOLLOUT, 0))
                    .is_ok()
            }) && epoll
                .add(&ask.sock, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .is_ok();
            if watched {
                asks.push(ask);
            }
        }
        if asks.is_empty() {
            return Some(self.tally(settling));
        }
        self.round = Some(Round {
            epoll,
            asks,
            ignored: 0,
            deadline: now + ANSWER_WITHIN,
            settling,
        });
        self.on_ready(now)
    }

    /// What the listing left out, said at most once per 10 s.
    fn note_listing(&mut self, listing: &Listing, now: Instant) {
        if listing.truncated {
            log::warn!(
                "more than {} names look like the pod's container-runs: asking the first ones",
                crate::rendezvous::MAX_LISTED
            );
        }
        if listing.strangers > 0
            && let Some(held) = self.warned.due(now)
        {
            log::warn!(
                "{}",
                Limited::text(
                    &format!(
                        "ignoring {} name(s) under the pod's rendezvous prefix bound by uid {}, not from root or container-run's uid",
                        listing.strangers,
                        listing.stranger_uid.unwrap_or_default()
                    ),
                    held
                )
            );
        }
    }

    /// The fd of the round that is out, for the event loop's poll.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.round.as_ref().map(|r| r.epoll.0.as_fd())
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.round.as_ref().map(|r| r.deadline)
    }

    /// Send what waited for room, read what has arrived; `Some(peers)`
    /// once the round is complete (every peer asked has answered, or its
    /// time is up).
    pub fn on_ready(&mut self, now: Instant) -> Option<Peers> {
        let mut round = self.round.take()?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for i in 0..round.asks.len() {
            if round.asks[i].settled {
                continue;
            }
            round.asks[i].try_send(&round.epoll);
            self.read_answers(&mut round, i, &mut buf);
        }
        let open = round.asks.iter().any(|a| !a.settled);
        if open && now < round.deadline {
            self.round = Some(round);
            return None;
        }
        self.unanswered(&round);
        Some(self.tally(round.settling))
    }

    /// Read what peer `i`'s socket holds: at most `READS_PER_TURN`
    /// datagrams, so that strangers flooding it (its kernel-chosen name is
    /// listed, and anyone may send there) cannot keep the loop from its
    /// deadlines; an answer whose sender is not believed is counted, never
    /// parsed, never quoted.
    fn read_answers(&mut self, round: &mut Round, i: usize, buf: &mut [u8]) {
        for _ in 0..READS_PER_TURN {
            let ask = &round.asks[i];
            if ask.settled {
                return;
            }
            let got = match datagram::recv(ask.sock.as_fd(), buf) {
                Ok(Some(got)) => got,
                Ok(None) | Err(_) => return,
            };
            let cred = got.peer.cred;
            if !self.trust.believes(cred.as_ref()) {
                if round.ignored == 0 {
                    log::warn!(
                        "ignoring an answer from {}: not from root or container-run's uid",
                        datagram::sender_words(cred.as_ref())
                    );
                }
                round.ignored += 1;
                continue;
            }
            let status = (got.len <= buf.len())
                .then(|| Status::from_line(&buf[..got.len]))
                .flatten();
            // Only a reply line settles a peer: junk must not end the round
            // before the real peer answered.
            if let Some(status) = status {
                let key = ask.key.clone();
                round.asks[i].settle(&round.epoll);
                self.remember(key, &status, round.settling);
            } else if round.ignored == 0 {
                log::warn!("ignoring an answer that is no reply line");
                round.ignored += 1;
            }
        }
    }

    /// Vouched-for peers that gave no believed answer may be draining:
    /// held until they answer or are gone.
    fn unanswered(&mut self, round: &Round) {
        let silent: Vec<&Ask> = round
            .asks
            .iter()
            .filter(|a| !a.settled && a.vouched)
            .collect();
        for ask in &silent {
            self.held.entry(ask.key.clone()).or_insert(Hold::Silent);
        }
        let full = silent.iter().filter(|a| !a.sent()).count();
        if !silent.is_empty()
            && let Some(held) = self.silence_warned.due(Instant::now())
        {
            let text = format!(
                "{} container-run(s) of the pod gave no answer within {}s ({full} with a full queue): \
                 waiting for them until they answer or are gone",
                silent.len(),
                ANSWER_WITHIN.as_secs(),
            );
            log::warn!("{}", Limited::text(&text, held));
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
                Hold::Draining | Hold::Silent => peers.draining += 1,
                Hold::Ready if settling => peers.ready += 1,
                Hold::Ready => peers.draining += 1,
            }
        }
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_known_by_its_job_and_process_not_its_nonce() {
        assert_eq!(
            key_of(b"container-run/0123/abcd/nonce").as_deref(),
            Some("container-run/0123/abcd/")
        );
        assert_eq!(key_of(b"container-run/0123"), None);
    }
}
