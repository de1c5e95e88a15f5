//! The control socket (SPEC sections 2 and 3): bound once for container-run's
//! whole life, never stolen from a live peer, never given up to anyone else,
//! removed at exit only if it is still ours. Datagrams are read and replies
//! sent without ever blocking.
//!
//! The socket's directory may belong to the job's user, so the socket is
//! bound inside a private directory (0700, container-run's own), given its
//! mode and group there, and only then moved under its name: it never
//! appears with another mode, and no path is ever chmod'ed or chown'ed. An
//! inotify watch on the directory reports any change of the name (removed,
//! renamed, replaced by another file); container-run then takes the name
//! back and logs who held it.
//!
//! Replies (docs/reliability.md has the reasoning): each goes from a fresh
//! unbound socket when the peer accepts one, so that a peer that never reads
//! pins only its own queue (the kernel bounds it); a peer connected to the
//! control socket accepts replies only from it, and when such peers hold
//! half of its send buffer unread, a fresh socket takes over the name while
//! the old one keeps serving the peers connected to it. A reply to a path is
//! sent with the sender's uid and gid, so it reaches only a socket its
//! sender could have sent to itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, setsockopt, socket, sockopt,
};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{Gid, UnlinkatFlags, fchdir, fchownat, linkat, unlinkat};

use crate::error::Fatal;
use crate::protocol::MAX_DATAGRAM;
use crate::state_files::{self, Base};

/// Sockets that lost the name but still serve the peers connected to them.
const MAX_RETIRED: usize = 4;

/// Senders with a path address whose credentials are kept for their
/// replies; more than the waiters a stop may have.
const MAX_PATH_SENDERS: usize = 256;

pub struct ControlSocket {
    /// `socks[0]` holds the name; the others lost it (taken back after an
    /// intrusion, or rotated away from non-reading peers) and are read
    /// until they are pushed out.
    socks: Vec<UnixDatagram>,
    /// Readable when any socket is: the one fd the event loop polls.
    epoll: Epoll,
    /// Round robin over `socks`, so that a flood on one cannot starve another.
    next: usize,
    path: PathBuf,
    /// BASE, trusted; `rel` (`data/JOB`) is opened below it without
    /// following links; `name` is the socket's file name.
    base: Base,
    rel: PathBuf,
    name: OsString,
    mode: u32,
    group: Option<u32>,
    /// Device and inode of the socket file holding the name.
    identity: (u64, u64),
    buf: Vec<u8>,
    /// Tells when the socket's name or its directory changes.
    watch: Option<Inotify>,
    /// Half the send buffer of `socks[0]`: above it, unread replies of
    /// connected peers make it give the name to a fresh socket.
    rotate_above: usize,
    rotate: Cell<bool>,
    control_replies: Cell<u32>,
    /// Peers that were connected to a control socket at their last reply:
    /// tried there first, saving a fresh socket that they would refuse.
    connected: RefCell<VecDeque<Vec<u8>>>,
    path_senders: VecDeque<(PathBuf, u32, u32)>,
    unnamed: SocketAddr,
    me: Identity,
}

/// Who container-run is, to tell its own files from intruders' and to
/// return to itself after sending as someone else.
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

const WATCHED: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

/// The name inside the private directory.
const INNER: &str = "s";

/// What is at the socket path before we bind.
#[derive(Debug, PartialEq, Eq)]
pub enum Occupant {
    Nothing,
    /// A socket file nobody answers on: left by a container-run that died.
    Stale,
    /// Something is bound there and accepts datagrams.
    Live,
    NotASocket,
}

fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFIFO => "FIFO",
        _ => "special file",
    }
}

fn is_socket(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFSOCK.bits()
}

/// Whether a socket at `name` in `dir` answers: never through a link.
fn occupant(dir: BorrowedFd, name: &OsStr, path: &Path) -> (Occupant, Option<FileStat>) {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(_) => (Occupant::Nothing, None),
        Ok(st) if !is_socket(&st) => (Occupant::NotASocket, Some(st)),
        Ok(st) => match UnixDatagram::unbound().and_then(|s| s.connect(path)) {
            Ok(()) => (Occupant::Live, Some(st)),
            Err(_) => (Occupant::Stale, Some(st)),
        },
    }
}

/// A directory only container-run's user can enter, created with an
/// unpredictable name in the socket's directory (same filesystem, so the
/// socket can be moved out of it), removed once the socket has left it.
struct PrivateDir<'a> {
    parent: BorrowedFd<'a>,
    name: String,
    fd: OwnedFd,
}

impl<'a> PrivateDir<'a> {
    fn create(parent: BorrowedFd<'a>, me: &Identity) -> io::Result<PrivateDir<'a>> {
        let name = format!(".container-run.{}", state_files::random_suffix()?);
        mkdirat(parent, name.as_str(), Mode::S_IRWXU).map_err(io::Error::from)?;
        let dir = openat(
            parent,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(|fd| {
            // The name was visible to the directory's owner between mkdir
            // and open: make sure this is the directory we created.
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
            if st.st_uid != me.uid || st.st_mode & 0o077 != 0 {
                return Err(io::Error::other(
                    "the private directory was replaced while being created",
                ));
            }
            Ok(fd)
        });
        match dir {
            Ok(fd) => Ok(PrivateDir { parent, name, fd }),
            Err(e) => {
                let _ = unlinkat(parent, name.as_str(), UnlinkatFlags::RemoveDir);
                Err(e)
            }
        }
    }
}

impl Drop for PrivateDir<'_> {
    fn drop(&mut self) {
        let _ = unlinkat(self.fd.as_fd(), INNER, UnlinkatFlags::NoRemoveDir);
        let _ = unlinkat(self.parent, self.name.as_str(), UnlinkatFlags::RemoveDir);
    }
}

/// Bind `name` relative to `dir`: `bind` takes a path, so the working
/// directory is moved there for the call and back (single threaded; no
/// child is spawned in between). No link is followed: the name is one
/// component inside a directory nobody else can enter.
fn bind_in(dir: BorrowedFd, name: &str) -> io::Result<UnixDatagram> {
    let here = openat(
        AT_FDCWD,
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    fchdir(dir).map_err(io::Error::from)?;
    let bound = UnixDatagram::bind(name);
    if let Err(e) = fchdir(here.as_fd()) {
        log::error!("cannot return to the working directory: {e}");
    }
    bound
}

/// How a new socket gets the name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// At start: only if nobody live holds the name (`link` fails on an
    /// existing name, so two starting container-runs cannot both win).
    Exclusive,
    /// While running: the name is ours; whatever sits there now was put
    /// there by someone else and is replaced.
    TakeBack,
}

impl ControlSocket {
    pub fn bind(
        base: &Base,
        path: &Path,
        mode: u32,
        group: Option<u32>,
    ) -> Result<ControlSocket, Fatal> {
        let dir = path.parent().unwrap_or(Path::new("."));
        // The socket is BASE/data/JOB/NAME (paths.rs): BASE is the operator's
        // choice; data/JOB may belong to the job's user.
        let base = base
            .try_clone()
            .map_err(|e| Fatal::setup("cannot keep the base directory open", e))?;
        let rel = dir.strip_prefix(base.path()).unwrap_or(dir).to_path_buf();
        let name = path.file_name().unwrap_or_default().to_os_string();
        let me = Identity::current();
        let (sock, identity) = Self::bind_new(
            &base,
            &rel,
            &name,
            path,
            mode,
            group,
            &me,
            Publish::Exclusive,
        )?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Fatal::setup("cannot create an epoll instance", e))?;
        epoll
            .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(|e| Fatal::setup("cannot watch the control socket", e))?;
        let sndbuf = nix::sys::socket::getsockopt(&sock, sockopt::SndBuf).unwrap_or(212_992);
        let unnamed = UnixDatagram::unbound()
            .and_then(|s| s.local_addr())
            .map_err(|e| Fatal::setup("cannot create a socket", e))?;
        let mut control = ControlSocket {
            socks: vec![sock],
            epoll,
            next: 0,
            path: path.to_path_buf(),
            base,
            rel,
            name,
            mode,
            group,
            identity,
            buf: vec![0; MAX_DATAGRAM + 1],
            watch: None,
            rotate_above: sndbuf / 2,
            rotate: Cell::new(false),
            control_replies: Cell::new(0),
            connected: RefCell::new(VecDeque::new()),
            path_senders: VecDeque::new(),
            unnamed,
            me,
        };
        control.watch = control.new_watch();
        Ok(control)
    }

    #[allow(clippy::too_many_arguments)]
    fn bind_new(
        base: &Base,
        rel: &Path,
        name: &OsStr,
        path: &Path,
        mode: u32,
        group: Option<u32>,
        me: &Identity,
        how: Publish,
    ) -> Result<(UnixDatagram, (u64, u64)), Fatal> {
        let cannot =
            |what: &str, e: io::Error| Fatal::setup(format!("{what} {}", path.display()), e);
        let data = base
            .open_beneath(rel, true)
            .map_err(|e| cannot("cannot open the directory of", e))?;
        let private = PrivateDir::create(data.as_fd(), me)
            .map_err(|e| cannot("cannot create a private directory for", e))?;
        let sock = bind_in(private.fd.as_fd(), INNER).map_err(|e| cannot("cannot bind", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| cannot("cannot make non-blocking", e))?;
        // Credentials of every sender, for replies to paths (see `reply`).
        setsockopt(&sock, sockopt::PassCred, &true)
            .map_err(|e| cannot("cannot ask for sender credentials on", io::Error::from(e)))?;
        let inner = private.fd.as_fd();
        if let Some(gid) = group {
            fchownat(
                inner,
                INNER,
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| cannot(&format!("cannot give group {gid} to"), io::Error::from(e)))?;
        }
        // Inside the private directory the name can only be our socket.
        fchmodat(
            inner,
            INNER,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| cannot("cannot set the mode of", io::Error::from(e)))?;
        let st = fstatat(inner, INNER, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| cannot("cannot stat", io::Error::from(e)))?;
        let identity = (st.st_dev, st.st_ino);
        match how {
            Publish::Exclusive => Self::publish_exclusive(inner, data.as_fd(), name, path, me)?,
            Publish::TakeBack => Self::publish_take_back(inner, data.as_fd(), name, path)?,
        }
        Ok((sock, identity))
    }

    fn publish_exclusive(
        inner: BorrowedFd,
        data: BorrowedFd,
        name: &OsStr,
        path: &Path,
        me: &Identity,
    ) -> Result<(), Fatal> {
        // Bounded: each round either links or clears the name.
        for _ in 0..3 {
            match linkat(inner, INNER, data, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(Fatal::setup(format!("cannot create {}", path.display()), e));
                }
            }
            let (occupant, st) = occupant(data, name, path);
            if let Some(st) = st.filter(|st| st.st_uid != me.uid) {
                // Not container-run's user's: no container-run put it there.
                log::warn!(
                    "{} is a {} of uid {}, not container-run's: replacing it",
                    path.display(),
                    kind(&st),
                    st.st_uid
                );
                return Self::publish_take_back(inner, data, name, path);
            }
            match occupant {
                Occupant::Live => {
                    return Err(Fatal::Setup(format!(
                        "{} is in use by another live container-run: is a container with the same job and process already running?",
                        path.display()
                    )));
                }
                Occupant::NotASocket => {
                    return Err(Fatal::Setup(format!(
                        "{} exists and is not a socket: not replacing it",
                        path.display()
                    )));
                }
                Occupant::Stale => {
                    log::info!("replacing stale socket {}", path.display());
                    let _ = state_files::remove_in(data, name);
                }
                Occupant::Nothing => {}
            }
        }
        Err(Fatal::Setup(format!(
            "{} keeps reappearing: another container-run is starting with the same job and process",
            path.display()
        )))
    }

    /// Move the socket over whatever holds the name: `rename` replaces a
    /// file or link without following it; a directory planted at the name
    /// is moved aside first.
    fn publish_take_back(
        inner: BorrowedFd,
        data: BorrowedFd,
        name: &OsStr,
        path: &Path,
    ) -> Result<(), Fatal> {
        let mut last = Errno::EEXIST;
        for _ in 0..3 {
            match renameat(inner, INNER, data, name) {
                Ok(()) => return Ok(()),
                Err(e @ (Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST)) => {
                    last = e;
                    let aside = format!(
                        ".container-run.intruder.{}",
                        state_files::random_suffix().unwrap_or_default()
                    );
                    let _ = renameat(data, name, data, aside.as_str());
                }
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(Fatal::setup(
            format!("cannot take back {}", path.display()),
            last,
        ))
    }

    fn open_data_dir(&self, create: bool) -> io::Result<OwnedFd> {
        self.base.open_beneath(&self.rel, create)
    }

    fn new_watch(&self) -> Option<Inotify> {
        let dir = self.path.parent()?;
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|w| w.add_watch(dir, WATCHED).map(|_| w));
        match watch {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch {}: {e}; a deleted socket will not be re-created",
                    dir.display()
                );
                None
            }
        }
    }

    /// The watch's descriptor, for the event loop's poll.
    pub fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(|w| w.as_fd())
    }

    /// The sentinel, the STOP marker and their temporaries
    /// (`PROCESS_containerrun.running`, `.PROCESS_containerrun.stopped.…`):
    /// container-run's own writes beside the socket, which need no check of
    /// the name.
    fn is_state_file(&self, name: &OsStr) -> bool {
        let name = name.as_bytes();
        let socket = self.name.as_bytes();
        let prefix = socket.strip_suffix(b"sock").unwrap_or(socket);
        let own = |n: &[u8]| n.starts_with(prefix) && n != socket;
        own(name) || name.strip_prefix(b".").is_some_and(own)
    }

    /// What holds the name now, never through a link.
    fn holder(&self) -> Option<FileStat> {
        let dir = self.open_data_dir(false).ok()?;
        fstatat(
            dir.as_fd(),
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
    }

    fn still_ours(&self) -> bool {
        self.holder()
            .is_some_and(|st| (st.st_dev, st.st_ino) == self.identity)
    }

    /// Called when the watch is readable: if the name is gone or holds
    /// anything but our socket, take it back, so that operators can reach
    /// this container-run again, and say who held it.
    pub fn on_watch_event(&mut self) {
        let Some(watch) = &self.watch else {
            return;
        };
        // Any event counts, not only those naming the socket: the job user's
        // games in the directory (a private directory swapped while being
        // created) may have made a take-back fail, and the next event is
        // the chance to try again.
        let mut any = false;
        let mut watch_lost = false;
        while let Ok(events) = watch.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                watch_lost |= e.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                );
                any |= !e.name.as_deref().is_some_and(|n| self.is_state_file(n));
            }
        }
        if !any {
            return;
        }
        let ours = match self.holder() {
            Some(st) if (st.st_dev, st.st_ino) == self.identity => true,
            Some(st) => {
                log::warn!(
                    "control socket {} was replaced by a {} of uid {}: taking the name back",
                    self.path.display(),
                    kind(&st),
                    st.st_uid
                );
                false
            }
            None => {
                log::warn!(
                    "control socket {} was removed: binding it again",
                    self.path.display()
                );
                false
            }
        };
        if !ours {
            self.take_name();
        }
        // After the take-back, which re-creates a deleted directory.
        if watch_lost {
            self.watch = self.new_watch();
        }
    }

    /// A fresh socket gets the name; the one that held it keeps serving the
    /// peers connected to it until `MAX_RETIRED` newer ones exist.
    fn take_name(&mut self) {
        // Bounded: a failure is logged, and the next event in the
        // directory tries again.
        let mut fresh = Err(Fatal::Setup(String::new()));
        for _ in 0..3 {
            fresh = Self::bind_new(
                &self.base,
                &self.rel,
                &self.name,
                &self.path,
                self.mode,
                self.group,
                &self.me,
                Publish::TakeBack,
            );
            if fresh.is_ok() {
                break;
            }
        }
        match fresh {
            Ok((sock, identity)) => {
                if let Err(e) = self
                    .epoll
                    .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                {
                    log::error!("cannot watch the new control socket: {e}");
                    return;
                }
                self.socks.insert(0, sock);
                self.identity = identity;
                while self.socks.len() > 1 + MAX_RETIRED {
                    if let Some(old) = self.socks.pop() {
                        let _ = self.epoll.delete(&old);
                    }
                }
                self.next = 0;
            }
            Err(e) => log::error!("cannot bind the control socket again: {e}"),
        }
    }

    /// The next datagram, if any: `Ok(None)` when every queue is empty.
    /// Oversized datagrams come back as an empty payload (ignored).
    pub fn recv(&mut self) -> io::Result<Option<(&[u8], SocketAddr)>> {
        if self.rotate.replace(false) {
            log::warn!(
                "replies to peers that do not read them fill the control socket's buffer: a fresh socket takes its name"
            );
            self.take_name();
        }
        let count = self.socks.len();
        for k in 0..count {
            let i = (self.next + k) % count;
            let got = match recv_from(&self.socks[i], &mut self.buf) {
                Ok(Some(got)) => got,
                Ok(None) => continue,
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            self.next = (i + 1) % count;
            let (n, addr, cred) = got;
            let sender = self.to_std(&addr);
            if let (Some(path), Some((uid, gid))) = (sender.as_pathname(), cred) {
                self.remember(path.to_path_buf(), uid, gid);
            }
            let payload: &[u8] = if n > MAX_DATAGRAM {
                &[]
            } else {
                &self.buf[..n]
            };
            return Ok(Some((payload, sender)));
        }
        Ok(None)
    }

    fn to_std(&self, addr: &Address) -> SocketAddr {
        let converted = match addr {
            Address::Path(p) => SocketAddr::from_pathname(p).ok(),
            Address::Abstract(name) => SocketAddr::from_abstract_name(name).ok(),
            Address::Unnamed => None,
        };
        converted.unwrap_or_else(|| self.unnamed.clone())
    }

    fn remember(&mut self, path: PathBuf, uid: u32, gid: u32) {
        self.path_senders.retain(|(p, _, _)| *p != path);
        if self.path_senders.len() == MAX_PATH_SENDERS {
            self.path_senders.pop_back();
        }
        self.path_senders.push_front((path, uid, gid));
    }

    /// Reply to a sender that has an address; never blocks, and a sender
    /// that is gone or whose queue is full simply gets nothing.
    pub fn reply(&self, to: &SocketAddr, line: &str) {
        let (addr, sender) = if let Some(path) = to.as_pathname() {
            // Sent as the sender: the path is looked up with its rights, so
            // a path swapped for a link leads only where it could send.
            let Some(&(_, uid, gid)) = self.path_senders.iter().find(|(p, _, _)| p == path) else {
                return;
            };
            let Ok(addr) = UnixAddr::new(path) else {
                return;
            };
            (addr, Some((uid, gid)))
        } else if let Some(name) = to.as_abstract_name() {
            // No permission applies to abstract names: anyone could send there.
            let Ok(addr) = UnixAddr::new_abstract(name) else {
                return;
            };
            (addr, None)
        } else {
            return;
        };
        let _as_sender = match sender {
            Some((uid, gid)) if uid != self.me.uid => {
                match SenderRights::assume(uid, gid, &self.me) {
                    Some(rights) => Some(rights),
                    None => {
                        log::debug!("reply not delivered: cannot send as uid {uid}");
                        return;
                    }
                }
            }
            _ => None,
        };
        let key = address_key(to);
        let was_connected = self.connected.borrow().contains(&key);
        if was_connected && self.send_from_control(&addr, line) {
            return;
        }
        match send_from_fresh_socket(&addr, line.as_bytes()) {
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
        if !was_connected && self.send_from_control(&addr, line) {
            let mut connected = self.connected.borrow_mut();
            if connected.len() == MAX_PATH_SENDERS {
                connected.pop_back();
            }
            connected.push_front(key);
        }
    }

    /// The peer is connected: only the socket it is connected to may send
    /// to it. False when none of ours may.
    fn send_from_control(&self, addr: &UnixAddr, line: &str) -> bool {
        for (i, sock) in self.socks.iter().enumerate() {
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

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One datagram from `sock`: its length, its sender's address and the
/// sender's uid and gid (SCM_CREDENTIALS, as the kernel saw them).
type Received = (usize, Address, Option<(u32, u32)>);

enum Address {
    Unnamed,
    Path(PathBuf),
    Abstract(Vec<u8>),
}

fn recv_from(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: every pointer handed to recvmsg points into a live local
    // buffer of the length given; the control buffer is aligned for cmsghdr
    // and walked only with the CMSG_* macros within msg_controllen.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut cbuf = [0u64; 8];
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
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
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
        let mut cred = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let uc: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                cred = Some((uc.uid, uc.gid));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let len = (msg.msg_namelen as usize)
            .saturating_sub(offset)
            .min(addr.sun_path.len());
        let raw: Vec<u8> = addr.sun_path[..len].iter().map(|&b| b as u8).collect();
        let address = match raw.first() {
            None => Address::Unnamed,
            Some(0) => Address::Abstract(raw[1..].to_vec()),
            Some(_) => {
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                Address::Path(PathBuf::from(OsStr::from_bytes(&raw[..end])))
            }
        };
        Ok(Some((n, address, cred)))
    }
}

/// A reply from a socket of its own: its unread bytes are charged to that
/// socket alone, and the kernel bounds how many a peer can leave unread.
fn send_from_fresh_socket(addr: &UnixAddr, bytes: &[u8]) -> Result<(), Errno> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    sendto(
        fd.as_raw_fd(),
        bytes,
        addr,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map(|_| ())
}

/// An address as bytes, to recognise a peer again.
fn address_key(addr: &SocketAddr) -> Vec<u8> {
    match (addr.as_pathname(), addr.as_abstract_name()) {
        (Some(p), _) => [b"/", p.as_os_str().as_bytes()].concat(),
        (None, Some(name)) => [b"\0", name].concat(),
        _ => Vec::new(),
    }
}

/// Bytes sent from `sock` that their receivers have not read yet.
fn unread_bytes(sock: &UnixDatagram) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 { n.max(0) as usize } else { 0 }
}

impl Identity {
    fn current() -> Identity {
        // SAFETY: plain getters; getgroups writes at most `n` entries.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0; n.max(0) as usize];
        let got = unsafe { libc::getgroups(n.max(0), groups.as_mut_ptr()) };
        groups.truncate(got.max(0) as usize);
        Identity { uid, gid, groups }
    }
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

impl AsFd for ControlSocket {
    /// The epoll instance over every socket: readable when any is.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl Drop for ControlSocket {
    /// Remove the socket file only if it is still the one we bound: another
    /// container-run may have replaced it since.
    fn drop(&mut self) {
        if self.still_ours()
            && let Ok(dir) = self.open_data_dir(false)
        {
            let _ = state_files::remove_in(dir.as_fd(), self.name.as_os_str());
        }
    }
}
