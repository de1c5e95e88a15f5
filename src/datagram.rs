//! A datagram knows its sender (SPEC section 3, "Who is believed"): the one
//! `recvmsg` of container-run and its clients returns the payload's length
//! with a `Peer`, the sender's address and the credentials the kernel
//! vouches for (SCM_CREDENTIALS). Whatever else a datagram brings is
//! dropped here: every fd passed with SCM_RIGHTS is closed before `recv`
//! returns, and the control buffer has a fixed size, so a sender chooses
//! neither how many fds arrive nor how much memory is used for them (fds
//! that do not fit are never installed; the kernel releases them).
//!
//! Also the one rule of belief: an answer counts only when its sender is
//! root, the reader's own uid, or the uid given with `--trust-uid`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What the kernel says about the process that sent a datagram: its pid
/// (0 when the sender lives in a pid namespace the reader cannot see), its
/// real uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Where a datagram came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An unbound socket: it cannot be answered.
    Unnamed,
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Address {
    pub fn is_unnamed(&self) -> bool {
        matches!(self, Address::Unnamed)
    }
}

/// The sender of one datagram: the only thing replies, waiters and the
/// barrier hold of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: Address,
    pub cred: Option<Cred>,
}

/// One datagram read: `len` bytes at the start of the caller's buffer
/// (`len` may exceed the buffer when the datagram was longer: truncated).
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub peer: Peer,
    /// How many fds came with it (all closed already).
    pub fds: usize,
}

/// Room for one `ucred` and a few fds; the kernel installs no more fds
/// than fit, and those that arrive are closed at once.
const CONTROL_WORDS: usize = 16;

/// Ask the kernel for every sender's credentials on `sock`: without this
/// the credentials are missing, and nothing is believed.
pub fn pass_credentials(sock: &impl std::os::fd::AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(io::Error::from)
}

/// The next datagram of `sock` without blocking: `Ok(None)` when its queue
/// is empty. EINTR is retried.
pub fn recv(sock: BorrowedFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: every pointer handed to recvmsg points into a live local
    // buffer of the length given; the control buffer is aligned for cmsghdr
    // (u64 words) and is read only by `control`, within msg_controllen.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut cbuf = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = loop {
            let n = libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
            );
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        };
        let (cred, fds) = control(&msg);
        Ok(Some(Received {
            len: n,
            peer: Peer {
                addr: address(&addr, msg.msg_namelen as usize),
                cred,
            },
            fds,
        }))
    }
}

/// The credentials a received message carries, and how many fds came with
/// it, each closed here.
///
/// # Safety
/// `msg` is a message `recvmsg` just filled: its control buffer holds
/// `msg_controllen` valid bytes, and SCM_RIGHTS data are fds the kernel
/// installed in this process for the caller alone.
unsafe fn control(msg: &libc::msghdr) -> (Option<Cred>, usize) {
    let (mut cred, mut fds) = (None, 0);
    // SAFETY: as the function's contract says; CMSG_* walk within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let len = ((*c).cmsg_len as usize).saturating_sub(data.offset_from(c.cast()) as usize);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if len >= std::mem::size_of::<libc::ucred>() =>
                {
                    let uc: libc::ucred = std::ptr::read_unaligned(data.cast());
                    cred = Some(Cred {
                        pid: uc.pid,
                        uid: uc.uid,
                        gid: uc.gid,
                    });
                }
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / std::mem::size_of::<libc::c_int>() {
                        let fd: libc::c_int =
                            std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                        drop(OwnedFd::from_raw_fd(fd));
                        fds += 1;
                    }
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    (cred, fds)
}

/// A sender's address as `recvmsg` filled `namelen` bytes of it.
fn address(addr: &libc::sockaddr_un, namelen: usize) -> Address {
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = namelen.saturating_sub(offset).min(addr.sun_path.len());
    let raw: Vec<u8> = addr.sun_path[..len].iter().map(|&b| b as u8).collect();
    match raw.first() {
        None => Address::Unnamed,
        Some(0) => Address::Abstract(raw[1..].to_vec()),
        Some(_) => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Address::Path(PathBuf::from(OsStr::from_bytes(&raw[..end])))
        }
    }
}

/// A fresh datagram socket, non-blocking, closed on exec, bound to nothing.
pub fn unbound_socket() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

/// A socket to ask from and read answers on: bound to an abstract address
/// the kernel picks (nothing to clean up, nothing in a directory that others
/// control, no collision between containers of one pod, which share
/// abstract names but not pids), non-blocking, with every sender's
/// credentials.
pub fn reply_socket() -> io::Result<std::os::unix::net::UnixDatagram> {
    use nix::sys::socket::{UnixAddr, bind};
    let fd = unbound_socket()?;
    pass_credentials(&fd)?;
    bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
    Ok(fd.into())
}

/// Send `bytes` to the abstract name `name` from `sock`, without blocking.
pub fn send_to_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    bytes: &[u8],
) -> io::Result<()> {
    use nix::sys::socket::{MsgFlags, UnixAddr, sendto};
    let addr = UnixAddr::new_abstract(name)?;
    sendto(
        sock.as_raw_fd(),
        bytes,
        &addr,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )?;
    Ok(())
}

/// What is at a name that should be a control socket, when it is not one
/// that can be reached without following a link.
#[derive(Debug)]
pub enum NotReachable {
    Missing,
    /// A symbolic link, a FIFO, a regular file, a directory, ...
    NotASocket(&'static str),
    Io(io::Error),
}

impl std::fmt::Display for NotReachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReachable::Missing => f.write_str("no such file"),
            NotReachable::NotASocket(what) => write!(f, "not a socket: it is {what}"),
            NotReachable::Io(e) => write!(f, "{}", crate::error::os_phrase(e)),
        }
    }
}

/// The socket file `name` in `dir`, opened as a file without following a
/// link (O_PATH|O_NOFOLLOW) and checked to be a socket.
pub fn open_socket_file(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, NotReachable> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENOENT => NotReachable::Missing,
        e => NotReachable::Io(e.into()),
    })?;
    let st = fstat(fd.as_fd()).map_err(|e| NotReachable::Io(e.into()))?;
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFSOCK => return Ok(fd),
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "a special file",
    };
    Err(NotReachable::NotASocket(kind))
}

/// Connect `sock` to the socket file held open as `file`: through
/// `/proc/self/fd/N`, which names that very file, so no link planted at
/// its name since it was opened can redirect the connection.
pub fn connect_file(sock: &std::os::unix::net::UnixDatagram, file: &OwnedFd) -> io::Result<()> {
    sock.connect(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// An unbound socket connected to the socket file `name` in `dir`, never
/// through a link.
pub fn connect_in(
    dir: BorrowedFd,
    name: &OsStr,
) -> Result<std::os::unix::net::UnixDatagram, NotReachable> {
    let file = open_socket_file(dir, name)?;
    let sock = std::os::unix::net::UnixDatagram::unbound().map_err(NotReachable::Io)?;
    connect_file(&sock, &file).map_err(NotReachable::Io)?;
    Ok(sock)
}

/// Whose answers are believed: root, the reader's own uid, and the uid of
/// `--trust-uid` (a container-run that runs as another user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    own: u32,
    extra: Option<u32>,
}

impl Trust {
    pub fn new(extra: Option<u32>) -> Trust {
        Trust {
            own: nix::unistd::getuid().as_raw(),
            extra,
        }
    }

    pub fn believes(&self, cred: Option<&Cred>) -> bool {
        cred.is_some_and(|c| self.believes_uid(c.uid))
    }

    /// Whether `uid` is one of those believed.
    pub fn believes_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own || Some(uid) == self.extra
    }

    /// The uids believed, for messages: `0`, `0, 1000`.
    pub fn describe(&self) -> String {
        let mut uids = vec![0, self.own];
        uids.extend(self.extra);
        uids.sort_unstable();
        uids.dedup();
        uids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Who sent, for a message: `uid 65534`, or `an unknown sender` when the
/// kernel gave no credentials.
pub fn sender_words(cred: Option<&Cred>) -> String {
    cred.map_or_else(
        || "an unknown sender".to_string(),
        |c| format!("uid {}", c.uid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn credentials_arrive_and_passed_fds_are_closed() {
        let (a, b) = UnixDatagram::pair().unwrap();
        pass_credentials(&b).unwrap();
        let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let files: Vec<std::fs::File> = (0..3)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        let iov = [std::io::IoSlice::new(b"STATUS")];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(files);
        let mut buf = [0u8; 64];
        let got = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..got.len], b"STATUS");
        assert_eq!(got.fds, 3);
        let cred = got.peer.cred.unwrap();
        assert_eq!(cred.uid, nix::unistd::getuid().as_raw());
        assert_eq!(cred.pid, std::process::id() as i32);
        let after = std::fs::read_dir("/proc/self/fd").unwrap().count();
        assert_eq!(after, before, "received fds were kept");
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn belief_is_root_own_uid_or_the_trusted_one() {
        let me = nix::unistd::getuid().as_raw();
        let cred = |uid| Cred {
            pid: 1,
            uid,
            gid: 0,
        };
        let t = Trust::new(Some(4242));
        assert!(t.believes(Some(&cred(0))));
        assert!(t.believes(Some(&cred(me))));
        assert!(t.believes(Some(&cred(4242))));
        assert!(!t.believes(None));
        let other = if me == 65534 { 65533 } else { 65534 };
        assert!(!t.believes(Some(&cred(other))));
        assert!(!Trust::new(None).believes(Some(&cred(4242))));
    }
}
