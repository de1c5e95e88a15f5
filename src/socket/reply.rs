//! Replies (SPEC section 3): one datagram per recognised command to a
//! sender that has an address, never blocking container-run.
//!
//! Each reply goes from a fresh unbound socket when the peer accepts one,
//! so that a peer that never reads pins only its own queue (the kernel
//! bounds it). A peer connected to one of container-run's sockets accepts
//! replies only from that socket: those go from there, and when peers
//! connected to the named socket hold half of its send buffer unread, a
//! fresh socket takes the name while the old one keeps serving the peers
//! connected to it (`name::Published::take_name`). A reply to a path is
//! sent with the sender's uid and gid, so it reaches only a socket its
//! sender could have sent to itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, UnixAddr, sendto};

use super::Identity;
use crate::datagram::{Address, Cred, Peer};

/// Peers remembered as connected to one of our sockets.
const MAX_CONNECTED: usize = 256;

pub struct Replies {
    /// Half the send buffer of the named socket: above it, unread replies
    /// of connected peers make it give the name to a fresh socket.
    rotate_above: usize,
    rotate: Cell<bool>,
    control_replies: Cell<u32>,
    /// Peers that were connected to one of our sockets at their last
    /// reply: tried there first, saving a fresh socket they would refuse.
    connected: RefCell<VecDeque<Vec<u8>>>,
}

impl Replies {
    pub fn new(named: &UnixDatagram) -> Replies {
        let sndbuf = nix::sys::socket::getsockopt(named, nix::sys::socket::sockopt::SndBuf)
            .unwrap_or(212_992);
        Replies {
            rotate_above: sndbuf / 2,
            rotate: Cell::new(false),
            control_replies: Cell::new(0),
            connected: RefCell::new(VecDeque::new()),
        }
    }

    /// Peers connected to the named socket leave too much unread: a fresh
    /// socket should take the name. Asking clears the flag.
    pub fn take_rotation(&self) -> bool {
        self.rotate.replace(false)
    }

    /// Reply to `peer` from a fresh socket, or, when the peer is connected
    /// to one of ours, from that one (`socks`: the named one first, the
    /// rendezvous last).
    pub fn send(&self, socks: &[&UnixDatagram], me: &Identity, peer: &Peer, line: &str) {
        let (addr, key, sender) = match &peer.addr {
            // Sent as the sender: the path is looked up with its rights, so
            // a path swapped for a link leads only where it could send.
            Address::Path(path) => match (UnixAddr::new(path), peer.cred) {
                (Ok(addr), Some(cred)) => (
                    addr,
                    [b"/", path.as_os_str().as_bytes()].concat(),
                    Some(cred),
                ),
                _ => return,
            },
            // No permission applies to abstract names: anyone could send there.
            Address::Abstract(name) => match UnixAddr::new_abstract(name) {
                Ok(addr) => (addr, [b"\0", name.as_slice()].concat(), None),
                Err(_) => return,
            },
            Address::Unnamed => return,
        };
        let _as_sender = match sender {
            Some(Cred { uid, gid, .. }) if uid != me.uid => {
                match SenderRights::assume(uid, gid, me) {
                    Some(rights) => Some(rights),
                    None => {
                        log::debug!("reply not delivered: cannot send as uid {uid}");
                        return;
                    }
                }
            }
            _ => None,
        };
        self.deliver(socks, &addr, key, line);
    }

    fn deliver(&self, socks: &[&UnixDatagram], addr: &UnixAddr, key: Vec<u8>, line: &str) {
        let was_connected = self.connected.borrow().contains(&key);
        if was_connected && self.send_from_control(socks, addr, line) {
            return;
        }
        match send_from_fresh_socket(addr, line.as_bytes()) {
            Ok(()) => {
                if was_connected {
                    self.connected.borrow_mut().retain(|k| *k != key);
                }
                return;
            }
            Err(Errno::EPERM) => {}
            Err(e) => {
                log::debug!("reply not delivered: {e}");
                return;
            }
        }
        if !was_connected && self.send_from_control(socks, addr, line) {
            let mut connected = self.connected.borrow_mut();
            if connected.len() == MAX_CONNECTED {
                connected.pop_back();
            }
            connected.push_front(key);
        }
    }

    /// The peer is connected: only the socket it is connected to may send
    /// to it. False when none of ours may.
    fn send_from_control(&self, socks: &[&UnixDatagram], addr: &UnixAddr, line: &str) -> bool {
        let last = socks.len().saturating_sub(1);
        for (i, sock) in socks.iter().enumerate() {
            // Clients never connect to the rendezvous (they send from
            // sockets of their own and get fresh-socket replies): a peer
            // connected to it is a stranger, answered only while the
            // rendezvous's buffer is not half full of what such peers do
            // not read, so that they can never stop its other replies.
            if i == last && i > 0 && unread_bytes(sock) > self.rotate_above {
                return true;
            }
            match sendto(
                sock.as_raw_fd(),
                line.as_bytes(),
                addr,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    // Checked every 16th reply: half the buffer holds far
                    // more than 16 replies, so the check still comes early.
                    let sent = self.control_replies.get().wrapping_add(1);
                    self.control_replies.set(sent);
                    if i == 0 && sent.is_multiple_of(16) && unread_bytes(sock) > self.rotate_above {
                        self.rotate.set(true);
                    }
                    return true;
                }
                Err(Errno::EPERM) => continue,
                Err(e) => {
                    log::debug!("reply not delivered: {e}");
                    return true;
                }
            }
        }
        false
    }
}

/// A reply from a socket of its own: its unread bytes are charged to that
/// socket alone, and the kernel bounds how many a peer can leave unread.
fn send_from_fresh_socket(addr: &UnixAddr, bytes: &[u8]) -> Result<(), Errno> {
    let fd = crate::datagram::unbound_socket()?;
    sendto(
        fd.as_raw_fd(),
        bytes,
        addr,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map(|_| ())
}

/// Bytes sent from `sock` that their receivers have not read yet.
fn unread_bytes(sock: &UnixDatagram) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 { n.max(0) as usize } else { 0 }
}

/// The filesystem rights of a sender, for the one `sendto` of a reply:
/// fsuid and fsgid become the sender's and the supplementary groups are
/// dropped (a non-zero fsuid also drops the capabilities that bypass
/// permissions). Raw system calls: they change only this thread, which is
/// container-run's only thread. Restored on drop.
struct SenderRights<'a> {
    me: &'a Identity,
    /// The kernel clears a process's parent-death signal when its fsuid or
    /// fsgid changes: re-armed on drop, so that a launcher's
    /// `PR_SET_PDEATHSIG` (`unshare --kill-child`) still ends container-run.
    pdeath: libc::c_int,
    ppid: libc::pid_t,
}

impl<'a> SenderRights<'a> {
    fn assume(uid: u32, gid: u32, me: &'a Identity) -> Option<SenderRights<'a>> {
        // SAFETY: credential system calls on this thread only, with valid
        // arguments; each is undone in `drop`. PR_GET_PDEATHSIG writes one int.
        unsafe {
            let mut pdeath: libc::c_int = 0;
            libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeath);
            let ppid = libc::getppid();
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                return None;
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
            // setfsuid returns the previous value and never fails loudly:
            // asking for an invalid one returns the one in force.
            let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
            let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
            let rights = SenderRights { me, pdeath, ppid };
            (fsuid == uid && fsgid == gid).then_some(rights)
        }
    }
}

impl Drop for SenderRights<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `assume`.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, self.me.uid);
            libc::syscall(libc::SYS_setfsgid, self.me.gid);
            if libc::syscall(
                libc::SYS_setgroups,
                self.me.groups.len(),
                self.me.groups.as_ptr(),
            ) != 0
            {
                log::error!(
                    "cannot restore supplementary groups: {}",
                    io::Error::last_os_error()
                );
            }
            if self.pdeath != 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, self.pdeath as libc::c_ulong);
                // The parent died while the signal was cleared: act as the
                // kernel would have (as a namespace's PID 1, getppid is 0
                // and this cannot be seen).
                if libc::getppid() != self.ppid {
                    libc::kill(libc::getpid(), self.pdeath);
                }
            }
        }
    }
}
