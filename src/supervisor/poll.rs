//! The loop's one wait: a `ppoll` over the sources that exist now (the
//! signalfd and the control socket always; the socket directory's watch,
//! the drain script's stdout and a round of STATUS to the peers while they
//! exist; stderr while log lines are held), until the earliest deadline or,
//! with none, without timeout. Which source is ready is said by name.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

/// Which of the loop's sources `ppoll` found ready.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    pub signals: bool,
    pub socket: bool,
    pub watch: bool,
    pub drain_out: bool,
    pub peers: bool,
}

impl Ready {
    /// Every source, read without waiting (each is non-blocking).
    pub fn all() -> Ready {
        let (signals, socket, watch, drain_out, peers) = (true, true, true, true, true);
        Ready {
            signals,
            socket,
            watch,
            drain_out,
            peers,
        }
    }
}

/// The loop's sources, as they are now.
pub struct Sources<'a> {
    pub signals: BorrowedFd<'a>,
    pub socket: BorrowedFd<'a>,
    pub watch: Option<BorrowedFd<'a>>,
    pub drain_out: Option<BorrowedFd<'a>>,
    pub peers: Option<BorrowedFd<'a>>,
}

/// The descriptors of one `ppoll`, only those that exist now.
#[derive(Default)]
struct PollSet<'a> {
    fds: Vec<PollFd<'a>>,
}

impl<'a> PollSet<'a> {
    fn add(&mut self, fd: Option<BorrowedFd<'a>>, events: PollFlags) -> Option<usize> {
        self.fds.push(PollFd::new(fd?, events));
        Some(self.fds.len() - 1)
    }

    fn ready(&self, at: Option<usize>) -> bool {
        let revents = at.and_then(|i| self.fds[i].revents());
        revents.is_some_and(|r| !r.is_empty())
    }
}

/// Wait until a source is ready or `deadline` has come.
pub fn wait(sources: Sources, deadline: Option<Instant>) -> nix::Result<Ready> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let mut set = PollSet::default();
    let signals = set.add(Some(sources.signals), PollFlags::POLLIN);
    let socket = set.add(Some(sources.socket), PollFlags::POLLIN);
    let watch = set.add(sources.watch, PollFlags::POLLIN);
    let drain_out = set.add(sources.drain_out, PollFlags::POLLIN);
    let peers = set.add(sources.peers, PollFlags::POLLIN);
    if crate::logger::pending() {
        // Held log lines: only the wake-up matters, they go out at the
        // loop's top. SAFETY: fd 2 stays open for container-run's life.
        set.add(
            Some(unsafe { BorrowedFd::borrow_raw(2) }),
            PollFlags::POLLOUT,
        );
    }
    ppoll(&mut set.fds, left.map(TimeSpec::from_duration), None)?;
    Ok(Ready {
        signals: set.ready(signals),
        socket: set.ready(socket),
        watch: set.ready(watch),
        drain_out: set.ready(drain_out),
        peers: set.ready(peers),
    })
}
