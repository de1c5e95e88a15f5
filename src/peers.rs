//! The pod-wide barrier's view of the other container-runs (SPEC section 8):
//! one round of STATUS to every control socket under `BASE/data`, answered
//! within `ANSWER_WITHIN`, counted only when the answer comes from root or
//! from container-run's own uid (the sender's credentials, read with
//! SO_PASSCRED): a job user's fake socket that claims to drain is no peer.
//! The round is non-blocking; the event loop polls its fd and its deadline.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};

use crate::machine::Peers;
use crate::protocol::{Drain, MAX_DATAGRAM, State, Status};

/// How long a peer has to answer before it is taken for no peer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

pub struct PeerRound {
    sock: UnixDatagram,
    /// Peers asked that have not answered as a peer yet.
    outstanding: usize,
    /// Who answered already: a peer counts once, however often it answers.
    answered: Vec<(String, String)>,
    /// Answers that were no peer's (wrong uid, not a reply line).
    ignored: usize,
    tally: Peers,
    deadline: Instant,
    uid: u32,
}

impl PeerRound {
    /// Ask every container-run socket under `BASE/data` but `own` for its STATUS; `None`
    /// when there is no other socket to ask (nothing is created then, so a
    /// container-run alone in its pod stops as fast as without a barrier).
    pub fn start(base: &Path, own: &Path, now: Instant) -> io::Result<Option<PeerRound>> {
        // Listed anew at each round: a container that starts or ends
        // meanwhile is seen at the next one.
        let others: Vec<PathBuf> = crate::paths::pod_sockets(base)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.socket)
            .filter(|p| p != own)
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let sock = crate::protocol::reply_socket()?;
        setsockopt(&sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        sock.set_nonblocking(true)?;
        let mut outstanding = 0;
        for path in others {
            // Refused, missing or full: no peer, this round.
            if sock.send_to(b"STATUS", &path).is_ok() {
                outstanding += 1;
            }
        }
        Ok(Some(PeerRound {
            sock,
            outstanding,
            answered: Vec::new(),
            ignored: 0,
            tally: Peers::default(),
            deadline: now + ANSWER_WITHIN,
            uid: nix::unistd::geteuid().as_raw(),
        }))
    }

    /// Read every answer that has arrived.
    pub fn on_readable(&mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while self.outstanding > 0 {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(UnixCredentials);
            let (n, uid) = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let uid = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmCredentials(cred) => Some(cred.uid()),
                            _ => None,
                        })
                    });
                    (msg.bytes, uid)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            // Only a trusted reply line settles a peer, once: anything else
            // (a job user's socket answering many times, junk) must not end
            // the round before the real peers have answered.
            let trusted = uid.is_some_and(|u| u == 0 || u == self.uid);
            match Status::from_line(&buf[..n.min(buf.len())]) {
                Some(status) if trusted => {
                    let who = (status.job.clone(), status.process.clone());
                    if !self.answered.contains(&who) {
                        self.answered.push(who);
                        self.outstanding -= 1;
                        self.count(&status);
                    }
                }
                other => {
                    if self.ignored == 0 {
                        let who = other.map_or_else(
                            || "an answer that is no reply line".to_string(),
                            |s| format!("an answer that claims to be {}/{}", s.job, s.process),
                        );
                        let from = uid.map_or_else(|| "?".to_string(), |u| u.to_string());
                        if trusted {
                            log::warn!("ignoring {who}");
                        } else {
                            log::warn!(
                                "ignoring {who}: it came from uid {from}, not from root or container-run's uid"
                            );
                        }
                    }
                    self.ignored += 1;
                }
            }
        }
    }

    fn count(&mut self, status: &Status) {
        match status.drain {
            Drain::Running => self.tally.draining += 1,
            Drain::Ready if status.state == State::Running => self.tally.ready += 1,
            _ => {}
        }
    }

    /// Every peer settled, or the time to answer is up.
    pub fn complete(&self, now: Instant) -> bool {
        self.outstanding == 0 || now >= self.deadline
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn tally(&self) -> Peers {
        self.tally
    }
}

impl AsFd for PeerRound {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
