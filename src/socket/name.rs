//! The control socket's name in `BASE/data/JOB` (SPEC section 2), for
//! netcat and the seed's scripts: bound once, never stolen from a live
//! container-run, never given up to anyone else, removed at exit only if it
//! is still ours.
//!
//! The directory may belong to the job's user, so the socket is bound inside
//! a private directory (0700, container-run's own), given its mode and group
//! there, and only then moved under its name: it never appears with another
//! mode, and no path is ever chmod'ed or chown'ed. An inotify watch on the
//! directory reports any change of the name; container-run then takes the
//! name back, at most `MAX_TAKE_BACKS_PER_SEC` times a second (a job user
//! renaming over it in a loop must not turn the take-back into a way to
//! burn container-run's CPU or flood its log: the warnings are counted).
//! Clients do not depend on this name (`rendezvous`), so a fake that holds
//! it for a moment fools nobody who checks credentials.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{Gid, UnlinkatFlags, fchdir, fchownat, linkat, unlinkat};

use super::Identity;
use crate::error::Fatal;
use crate::logger::Limited;
use crate::paths::Paths;
use crate::state_files::{self, Base};

/// Sockets that lost the name but still serve the peers connected to them.
const MAX_RETIRED: usize = 4;

/// Reads of the watch in one turn of the loop.
const WATCH_READS_PER_TURN: usize = 16;

/// Take-backs are spaced by at least this much; one asked for sooner
/// waits for a deadline of the loop.
const TAKE_BACK_SPACING: Duration = Duration::from_millis(50);

/// The bound above, for the module's documentation and tests.
pub const MAX_TAKE_BACKS_PER_SEC: u32 = 20;

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

pub fn kind(st: &FileStat) -> &'static str {
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

/// Whether a socket at `name` in `dir` answers; the name is opened without
/// following a link and connected through that very file.
fn occupant(dir: BorrowedFd, name: &OsStr) -> (Occupant, Option<FileStat>) {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(_) => (Occupant::Nothing, None),
        Ok(st) if !is_socket(&st) => (Occupant::NotASocket, Some(st)),
        Ok(st) => match crate::datagram::connect_in(dir, name) {
            Ok(_) => (Occupant::Live, Some(st)),
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

/// Where the name is, and how its socket is made.
struct Place {
    base: Base,
    /// `data/JOB`, opened below BASE without following links.
    rel: PathBuf,
    name: OsString,
    path: PathBuf,
    mode: u32,
    group: Option<u32>,
}

pub struct Published {
    /// `socks[0]` holds the name; the others lost it (taken back after an
    /// intrusion, or rotated away from non-reading peers) and are read
    /// until they are pushed out.
    pub socks: Vec<UnixDatagram>,
    place: Place,
    /// Device and inode of the socket file holding the name.
    identity: (u64, u64),
    watch: Option<Inotify>,
    last_take_back: Option<Instant>,
    /// A take-back asked for while the last one was too recent.
    take_back_due: Option<Instant>,
    warned: Limited,
    failed: Limited,
    rotated: Limited,
}

impl Published {
    pub fn bind(
        base: &Base,
        paths: &Paths,
        (mode, group): (u32, Option<u32>),
        me: &Identity,
    ) -> Result<Published, Fatal> {
        let place = Place {
            base: base
                .try_clone()
                .map_err(|e| Fatal::setup("cannot keep the base directory open", e))?,
            rel: paths
                .data_dir
                .strip_prefix(&paths.base)
                .unwrap_or(&paths.data_dir)
                .to_path_buf(),
            name: paths.socket.file_name().unwrap_or_default().to_os_string(),
            path: paths.socket.clone(),
            mode,
            group,
        };
        let (sock, identity) = place.bind_new(me, Publish::Exclusive)?;
        let mut published = Published {
            socks: vec![sock],
            place,
            identity,
            watch: None,
            last_take_back: None,
            take_back_due: None,
            warned: Limited::default(),
            rotated: Limited::default(),
            failed: Limited::default(),
        };
        published.watch = published.new_watch();
        Ok(published)
    }

    pub fn path(&self) -> &Path {
        &self.place.path
    }

    fn new_watch(&self) -> Option<Inotify> {
        let dir = self.place.path.parent()?;
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

    /// A take-back that waits for its spacing.
    pub fn deadline(&self) -> Option<Instant> {
        self.take_back_due
    }

    fn open_data_dir(&self, create: bool) -> io::Result<OwnedFd> {
        self.place.base.open_beneath(&self.place.rel, create)
    }

    /// What holds the name now, never through a link.
    fn holder(&self) -> Option<FileStat> {
        let dir = self.open_data_dir(false).ok()?;
        fstatat(
            dir.as_fd(),
            self.place.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
    }

    pub fn still_ours(&self) -> bool {
        self.holder()
            .is_some_and(|st| (st.st_dev, st.st_ino) == self.identity)
    }

    /// The sentinel and their temporaries (`PROCESS_containerrun.running`,
    /// `.PROCESS_containerrun.…`): container-run's own writes beside the
    /// socket, which need no check of the name.
    fn is_own_file(&self, name: &OsStr) -> bool {
        let name = name.as_bytes();
        let socket = self.place.name.as_bytes();
        let prefix = socket.strip_suffix(b"sock").unwrap_or(socket);
        let own = |n: &[u8]| n.starts_with(prefix) && n != socket;
        own(name) || name.strip_prefix(b".").is_some_and(own)
    }

    /// Called when the watch is readable: if the name is gone or holds
    /// anything but our socket, take it back, so that netcat users reach
    /// this container-run again, and say who held it.
    /// `true` when a fresh socket holds the name now (the caller polls it
    /// too).
    pub fn on_watch_event(&mut self, me: &Identity, now: Instant) -> bool {
        let Some(watch) = &self.watch else {
            return false;
        };
        // Any event counts, not only those naming the socket: the job user's
        // games in the directory (a private directory swapped while being
        // created) may have made a take-back fail, and the next event is
        // the chance to try again.
        // Bounded: what is left keeps the watch readable for the next turn.
        let (mut any, mut watch_lost) = (false, false);
        for _ in 0..WATCH_READS_PER_TURN {
            let events = match watch.read_events() {
                Ok(events) if !events.is_empty() => events,
                _ => break,
            };
            for e in events {
                watch_lost |= e.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                );
                // An overflow names nothing: anything may have happened.
                any |= e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || !e.name.as_deref().is_some_and(|n| self.is_own_file(n));
            }
        }
        let mut rebound = false;
        // A take-back already waiting for its spacing looks at the name
        // then: events until then cost nothing more.
        if any && self.take_back_due.is_none() {
            rebound = self.check_name(me, now);
        }
        // After the take-back, which re-creates a deleted directory.
        if watch_lost {
            self.watch = self.new_watch();
        }
        rebound
    }

    /// The spaced take-back is due.
    pub fn on_deadline(&mut self, me: &Identity, now: Instant) -> bool {
        match self.take_back_due {
            Some(at) if at <= now => {
                self.take_back_due = None;
                self.check_name(me, now)
            }
            _ => false,
        }
    }

    /// Take the name back if it is not ours; `true` when a fresh socket
    /// holds it now.
    fn check_name(&mut self, me: &Identity, now: Instant) -> bool {
        let what = match self.holder() {
            Some(st) if (st.st_dev, st.st_ino) == self.identity => return false,
            Some(st) => format!(
                "control socket {} was replaced by a {} of uid {}: taking the name back",
                self.place.path.display(),
                kind(&st),
                st.st_uid
            ),
            None => format!(
                "control socket {} was removed: binding it again",
                self.place.path.display()
            ),
        };
        if let Some(last) = self.last_take_back
            && now.saturating_duration_since(last) < TAKE_BACK_SPACING
        {
            self.take_back_due = Some(last + TAKE_BACK_SPACING);
            return false;
        }
        if let Some(held) = self.warned.due(now) {
            log::warn!("{}", Limited::text(&what, held));
        }
        self.last_take_back = Some(now);
        self.take_name(me)
    }

    /// Peers connected to the named socket leave half its buffer unread: a
    /// fresh socket takes the name at once (`reply`), the warning counted.
    /// Not spaced: a socket that fills before its turn would drop the
    /// replies of every peer that connects meanwhile, and each rotation
    /// already costs the sender half a buffer of unread replies. `true`
    /// when a fresh socket holds the name now.
    pub fn rotate(&mut self, me: &Identity, now: Instant) -> bool {
        if let Some(held) = self.rotated.due(now) {
            log::warn!(
                "{}",
                Limited::text(
                    "replies to peers that do not read them fill the control socket's buffer: a fresh socket takes its name",
                    held
                )
            );
        }
        self.take_name(me)
    }

    /// A fresh socket gets the name; the one that held it keeps serving the
    /// peers connected to it until `MAX_RETIRED` newer ones exist.
    pub fn take_name(&mut self, me: &Identity) -> bool {
        // Bounded: a failure is logged, and the next event in the
        // directory tries again.
        let mut fresh = Err(Fatal::Setup(String::new()));
        for _ in 0..3 {
            fresh = self.place.bind_new(me, Publish::TakeBack);
            if fresh.is_ok() {
                break;
            }
        }
        match fresh {
            Ok((sock, identity)) => {
                self.socks.insert(0, sock);
                self.identity = identity;
                self.socks.truncate(1 + MAX_RETIRED);
                true
            }
            Err(e) => {
                // Each change in the directory tries again: one line per
                // window, with a count, however often that fails.
                if let Some(held) = self.failed.due(Instant::now()) {
                    let text = format!("cannot bind the control socket again: {e}");
                    log::error!("{}", Limited::text(&text, held));
                }
                false
            }
        }
    }

    /// Remove the socket file only if it is still the one we bound: another
    /// container-run may have replaced it since.
    pub fn remove(&self) {
        if self.still_ours()
            && let Ok(dir) = self.open_data_dir(false)
        {
            let _ = state_files::remove_in(dir.as_fd(), self.place.name.as_os_str());
        }
    }
}

impl Place {
    fn cannot(&self, what: &str, e: impl std::fmt::Display) -> Fatal {
        Fatal::setup(format!("{what} {}", self.path.display()), e)
    }

    fn bind_new(&self, me: &Identity, how: Publish) -> Result<(UnixDatagram, (u64, u64)), Fatal> {
        let data = self
            .base
            .open_beneath(&self.rel, true)
            .map_err(|e| self.cannot("cannot open the directory of", e))?;
        let private = PrivateDir::create(data.as_fd(), me)
            .map_err(|e| self.cannot("cannot create a private directory for", e))?;
        let sock = bind_in(private.fd.as_fd(), INNER).map_err(|e| self.cannot("cannot bind", e))?;
        super::prepare(&sock).map_err(|e| self.cannot("cannot set up", e))?;
        let inner = private.fd.as_fd();
        if let Some(gid) = self.group {
            fchownat(
                inner,
                INNER,
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.cannot(&format!("cannot give group {gid} to"), e))?;
        }
        // Inside the private directory the name can only be our socket.
        fchmodat(
            inner,
            INNER,
            Mode::from_bits_truncate(self.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.cannot("cannot set the mode of", e))?;
        let st = fstatat(inner, INNER, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.cannot("cannot stat", e))?;
        match how {
            Publish::Exclusive => self.publish_exclusive(inner, data.as_fd(), me)?,
            Publish::TakeBack => self.publish_take_back(inner, data.as_fd())?,
        }
        Ok((sock, (st.st_dev, st.st_ino)))
    }

    fn publish_exclusive(
        &self,
        inner: BorrowedFd,
        data: BorrowedFd,
        me: &Identity,
    ) -> Result<(), Fatal> {
        let name = self.name.as_os_str();
        let path = self.path.display();
        // Bounded: each round either links or clears the name.
        for _ in 0..3 {
            match linkat(inner, INNER, data, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.cannot("cannot create", e)),
            }
            let (occupant, st) = occupant(data, name);
            if let Some(st) = st.filter(|st| st.st_uid != me.uid) {
                // Not container-run's user's: no container-run put it there.
                log::warn!(
                    "{path} is a {} of uid {}, not container-run's: replacing it",
                    kind(&st),
                    st.st_uid
                );
                return self.publish_take_back(inner, data);
            }
            match occupant {
                Occupant::Live => {
                    return Err(Fatal::Setup(format!(
                        "{path} is in use by another live container-run: is a container with the same job and process already running?"
                    )));
                }
                Occupant::NotASocket => {
                    return Err(Fatal::Setup(format!(
                        "{path} exists and is not a socket: not replacing it"
                    )));
                }
                Occupant::Stale => {
                    log::info!("replacing stale socket {path}");
                    let _ = state_files::remove_in(data, name);
                }
                Occupant::Nothing => {}
            }
        }
        Err(Fatal::Setup(format!(
            "{path} keeps reappearing: another container-run is starting with the same job and process"
        )))
    }

    /// Move the socket over whatever holds the name: `rename` replaces a
    /// file or link without following it; a directory planted at the name
    /// is moved aside first.
    fn publish_take_back(&self, inner: BorrowedFd, data: BorrowedFd) -> Result<(), Fatal> {
        let name = self.name.as_os_str();
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
        Err(self.cannot("cannot take back", last))
    }
}
