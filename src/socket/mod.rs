//! The control sockets (SPEC sections 2 and 3), bound once for
//! container-run's whole life: the name in `BASE/data/JOB` that netcat and
//! the seed's scripts use (`name`), and the pod's rendezvous in the
//! abstract namespace that clients and peers use (`crate::rendezvous`),
//! which no file permission can rename, replace or hide. One epoll fd over
//! all of them is what the event loop polls; every datagram is read with
//! its sender (`crate::datagram`), and replies go out without ever blocking
//! (`reply`).
//!
//! The kernel checks the named socket's mode and group when a sender
//! reaches it; nothing checks who reaches an abstract name, so a command
//! that arrives there is held to the same rule here, by the sender's
//! credentials: root, container-run's own uid, the socket's group, or
//! others, each as the mode allows.

pub mod name;
mod reply;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{UnixAddr, bind};

use crate::datagram::{self, Cred, Peer};
use crate::error::Fatal;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, MAX_DATAGRAM};
use crate::rendezvous::Pod;

/// Who container-run is, to tell its own files from intruders' and to
/// return to itself after sending as someone else.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

impl Identity {
    pub fn current() -> Identity {
        // SAFETY: plain getters; getgroups writes at most `n` entries.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0; n.max(0) as usize];
        let got = unsafe { libc::getgroups(n.max(0), groups.as_mut_ptr()) };
        groups.truncate(got.max(0) as usize);
        Identity { uid, gid, groups }
    }
}

/// What one datagram asks for.
#[derive(Debug)]
pub enum Incoming {
    Command(ControlCommand, Peer),
    /// Junk, an oversized datagram, or a command refused by credentials.
    Ignored,
}

/// Who may command through the rendezvous: the named socket's rule.
struct Access {
    owner: u32,
    group: u32,
    mode: u32,
}

impl Access {
    fn permits(&self, cred: Option<&Cred>) -> bool {
        let Some(c) = cred else {
            return false;
        };
        if c.uid == 0 {
            return true;
        }
        let bits = if c.uid == self.owner {
            self.mode >> 6
        } else if c.gid == self.group || member_of(c.pid, self.group) {
            self.mode >> 3
        } else {
            self.mode
        };
        bits & 0o2 != 0
    }
}

/// Whether process `pid` (as container-run sees it) has `group` among its
/// supplementary groups: `/proc/PID/status`. A sender in a pid namespace
/// container-run cannot see (pid 0) counts by its primary group only.
fn member_of(pid: i32, group: u32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|n| n.parse() == Ok(group)))
}

/// Datagrams read from one socket in a row before the others are asked.
const STREAK: usize = 16;

pub struct ControlSocket {
    published: name::Published,
    /// The pod's rendezvous: `container-run/POD/TARGET/NONCE`.
    rendezvous: UnixDatagram,
    rendezvous_name: Vec<u8>,
    access: Access,
    /// Readable when any socket is: the one fd the event loop polls.
    epoll: Epoll,
    /// Round robin over the sockets, so that a flood on one cannot starve
    /// another: `next` is read first, up to `STREAK` datagrams in a row
    /// (a socket that just had one likely has more; asking an empty one
    /// first would double the system calls of a burst).
    next: usize,
    streak: usize,
    buf: Vec<u8>,
    replies: reply::Replies,
    me: Identity,
}

/// Non-blocking, with every sender's credentials.
fn prepare(sock: &UnixDatagram) -> std::io::Result<()> {
    sock.set_nonblocking(true)?;
    datagram::pass_credentials(sock)
}

fn bind_abstract(name: &[u8]) -> std::io::Result<UnixDatagram> {
    let fd = datagram::unbound_socket()?;
    bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name)?)?;
    datagram::pass_credentials(&fd)?;
    Ok(UnixDatagram::from(fd))
}

impl ControlSocket {
    /// Bind the named socket (`mode` and `group` its own) and the
    /// rendezvous of `pod`.
    pub fn bind(
        base: &crate::state_files::Base,
        paths: &Paths,
        pod: &Pod,
        (mode, group): (u32, Option<u32>),
    ) -> Result<ControlSocket, Fatal> {
        let me = Identity::current();
        let published = name::Published::bind(base, paths, (mode, group), &me)?;
        let nonce = crate::state_files::random_suffix()
            .map_err(|e| Fatal::setup("cannot draw a random name", e))?;
        let rendezvous_name = pod.name_for(&paths.job, &paths.process, &nonce);
        let rendezvous = bind_abstract(&rendezvous_name).map_err(|e| {
            Fatal::setup(
                format!("cannot bind @{}", String::from_utf8_lossy(&rendezvous_name)),
                e,
            )
        })?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Fatal::setup("cannot create an epoll instance", e))?;
        for sock in [&published.socks[0], &rendezvous] {
            epoll
                .add(sock, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .map_err(|e| Fatal::setup("cannot watch the control socket", e))?;
        }
        Ok(ControlSocket {
            replies: reply::Replies::new(&published.socks[0]),
            access: Access {
                owner: me.uid,
                group: group.unwrap_or(me.gid),
                mode,
            },
            published,
            rendezvous,
            rendezvous_name,
            epoll,
            next: 0,
            streak: 0,
            buf: vec![0; MAX_DATAGRAM],
            me,
        })
    }

    pub fn path(&self) -> &Path {
        self.published.path()
    }

    /// The abstract name, for logs: `@container-run/…`.
    pub fn rendezvous_name(&self) -> &[u8] {
        &self.rendezvous_name
    }

    /// Every socket: the named one, those that lost the name, the
    /// rendezvous last.
    fn socks(&self) -> Vec<&UnixDatagram> {
        self.published
            .socks
            .iter()
            .chain(std::iter::once(&self.rendezvous))
            .collect()
    }

    fn watch_new_socket(&mut self) {
        if let Err(e) = self.epoll.add(
            &self.published.socks[0],
            EpollEvent::new(EpollFlags::EPOLLIN, 0),
        ) {
            log::error!("cannot watch the new control socket: {e}");
        }
        self.next = 0;
        self.streak = 0;
    }

    /// The next datagram, if any: `Ok(None)` when every queue is empty.
    pub fn recv(&mut self) -> std::io::Result<Option<Incoming>> {
        if self.replies.take_rotation() && self.published.rotate(&self.me, Instant::now()) {
            self.watch_new_socket();
        }
        let count = self.published.socks.len() + 1;
        for k in 0..count {
            let i = (self.next + k) % count;
            let rendezvous = i == count - 1;
            let sock = if rendezvous {
                &self.rendezvous
            } else {
                &self.published.socks[i]
            };
            let got = match datagram::recv(sock.as_fd(), &mut self.buf) {
                Ok(Some(got)) => got,
                Ok(None) => continue,
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            self.streak = if i == self.next { self.streak + 1 } else { 1 };
            if self.streak >= STREAK {
                self.next = (i + 1) % count;
                self.streak = 0;
            } else {
                self.next = i;
            }
            if got.fds > 0 {
                log::debug!("closed {} fds that came with a datagram", got.fds);
            }
            let command = if got.len > MAX_DATAGRAM {
                None
            } else {
                ControlCommand::parse(&self.buf[..got.len])
            };
            let Some(command) = command else {
                return Ok(Some(Incoming::Ignored));
            };
            if rendezvous && !self.access.permits(got.peer.cred.as_ref()) {
                self.refuse(&got.peer);
                return Ok(Some(Incoming::Ignored));
            }
            return Ok(Some(Incoming::Command(command, got.peer)));
        }
        Ok(None)
    }

    /// A command by the rendezvous from someone the named socket's mode
    /// would have refused: told so, as `connect` would have told it.
    fn refuse(&self, peer: &Peer) {
        log::debug!(
            "refused a command from {} at the rendezvous: the socket's mode does not allow it",
            datagram::sender_words(peer.cred.as_ref())
        );
        self.reply(peer, crate::protocol::REFUSED);
    }

    /// Reply to a sender that has an address; never blocks, and a sender
    /// that is gone or whose queue is full simply gets nothing.
    pub fn reply(&self, peer: &Peer, line: &str) {
        self.replies.send(&self.socks(), &self.me, peer, line);
    }

    /// The watch's descriptor, for the event loop's poll.
    pub fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.published.watch_fd()
    }

    /// Called when the watch is readable.
    pub fn on_watch_event(&mut self, now: Instant) {
        if self.published.on_watch_event(&self.me, now) {
            self.watch_new_socket();
        }
    }

    /// A take-back that waits for its spacing, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.published.deadline()
    }

    pub fn on_deadline(&mut self, now: Instant) {
        if self.published.on_deadline(&self.me, now) {
            self.watch_new_socket();
        }
    }
}

impl AsFd for ControlSocket {
    /// The epoll instance over every socket: readable when any is.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.published.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendezvous_holds_senders_to_the_named_sockets_mode() {
        let cred = |uid, gid| Cred { pid: 0, uid, gid };
        let access = |mode| Access {
            owner: 1000,
            group: 2000,
            mode,
        };
        let a = access(0o660);
        assert!(a.permits(Some(&cred(0, 0))));
        assert!(a.permits(Some(&cred(1000, 1))));
        assert!(a.permits(Some(&cred(3000, 2000))));
        assert!(!a.permits(Some(&cred(3000, 3000))));
        assert!(!a.permits(None));
        let a = access(0o600);
        assert!(!a.permits(Some(&cred(3000, 2000))));
        assert!(a.permits(Some(&cred(1000, 2000))));
        let a = access(0o662);
        assert!(a.permits(Some(&cred(3000, 3000))));
        let a = access(0o460);
        assert!(!a.permits(Some(&cred(1000, 1))), "owner without write");
    }
}
