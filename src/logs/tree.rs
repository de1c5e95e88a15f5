//! The watched tree: a root directory (BASE/sys/log) and directories down
//! to a depth below it, each held as an O_NOFOLLOW directory fd and
//! watched by inotify, and the `*.log` regular files in them, each read
//! through its own fd. Keeps: nothing is reached through a symbolic link
//! (directories are opened relative to their parent's fd and watched
//! through /proc/self/fd; files are opened O_NOFOLLOW|O_NONBLOCK and kept
//! only when fstat says regular); at most `Limits` directories and files
//! are held whatever is planted; a file is known by its inode, so a rename
//! within the tree keeps its place in the stream.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};

use super::follow::{FileId, Followed, last_lines_start};
use super::out::{self, Out};
pub use super::scope::{Limits, Options, Select, Start};

const WATCH: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    // Not in nix's list: no events for names already unlinked.
    .union(AddWatchFlags::from_bits_retain(libc::IN_EXCL_UNLINK));

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// O_NONBLOCK: a FIFO swapped in after the check opens without waiting for
/// a writer; O_NOCTTY: a terminal never becomes ours.
const FILE_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Reads of the inotify queue in one turn (4 KiB each); the rest waits
/// for the next turn, so that files get their turn too.
const EVENT_READS: usize = 64;

/// What a file leaving the tree may still stream: 64 MiB.
const DRAIN_READS: usize = 1024;

struct Dir {
    fd: OwnedFd,
    /// Relative to the root.
    rel: PathBuf,
    depth: u8,
    owner: u32,
    files: HashMap<OsString, FileId>,
    subdirs: HashMap<OsString, WatchDescriptor>,
}

pub struct Tree {
    inotify: Inotify,
    base: crate::state_files::Base,
    opts: Options,
    limits: Limits,
    dirs: HashMap<WatchDescriptor, Dir>,
    files: HashMap<FileId, Followed>,
    /// The name a file was last seen under: where it is rotated.
    homes: HashMap<FileId, (WatchDescriptor, OsString)>,
    ready: HashSet<FileId>,
    root: Option<WatchDescriptor>,
    at_start: bool,
    /// A bound was reached: some names are not followed.
    full: bool,
    rescan: bool,
    root_lost: bool,
    unnamed: bool,
    buf: Vec<u8>,
}

impl Tree {
    pub fn open(base: &Path, opts: Options, limits: Limits) -> io::Result<Tree> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut tree = Tree {
            inotify,
            base: crate::state_files::Base::open(base, opts.create)?,
            opts,
            limits,
            dirs: HashMap::new(),
            files: HashMap::new(),
            homes: HashMap::new(),
            ready: HashSet::new(),
            root: None,
            at_start: true,
            full: false,
            rescan: false,
            root_lost: false,
            unnamed: false,
            buf: vec![0; super::follow::PIECE],
        };
        tree.open_root()?;
        tree.at_start = false;
        Ok(tree)
    }

    fn open_root(&mut self) -> io::Result<()> {
        let fd = self.base.open_beneath(&self.opts.root, self.opts.create)?;
        self.root = Some(self.add_dir(fd, PathBuf::new(), 0)?);
        Ok(())
    }

    /// Files and directories followed.
    pub fn counts(&self) -> (usize, usize) {
        (self.files.len(), self.dirs.len())
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Whether the root directory holds a followed file of that name.
    pub fn has(&self, name: &OsStr) -> bool {
        let root = self.root.and_then(|wd| self.dirs.get(&wd));
        root.is_some_and(|d| d.files.contains_key(name))
    }

    fn add_dir(&mut self, fd: OwnedFd, rel: PathBuf, depth: u8) -> io::Result<WatchDescriptor> {
        if self.dirs.len() >= self.limits.dirs {
            self.bound_reached("directories", self.limits.dirs, &rel);
            return Err(io::Error::other("bound reached"));
        }
        let st = fstat(fd.as_fd())?;
        // The directory just opened, not whatever its name leads to now.
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut wd = self.inotify.add_watch(proc_path.as_str(), WATCH)?;
        if self.dirs.contains_key(&wd) {
            // Known under another name (moved, seen by a rescan first).
            self.detach(wd);
            wd = self.inotify.add_watch(proc_path.as_str(), WATCH)?;
        }
        let dir = Dir {
            fd,
            rel,
            depth,
            owner: st.st_uid,
            files: HashMap::new(),
            subdirs: HashMap::new(),
        };
        self.dirs.insert(wd, dir);
        self.list(wd);
        Ok(wd)
    }

    /// Every name in the directory that may be followed, and every name
    /// followed there before (it may be gone).
    fn list(&mut self, wd: WatchDescriptor) {
        use nix::dir::Type;
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        let may_descend = dir.depth < self.opts.depth;
        let known: Vec<OsString> = dir
            .files
            .keys()
            .chain(dir.subdirs.keys())
            .cloned()
            .collect();
        let mut listing = match nix::dir::Dir::openat(dir.fd.as_fd(), ".", DIR_FLAGS, Mode::empty())
        {
            Ok(listing) => listing,
            Err(e) => {
                log::warn!("cannot list {}: {}", self.shown(&dir.rel), e.desc());
                return;
            }
        };
        for entry in listing.iter() {
            let Ok(entry) = entry else { break };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let worth = match entry.file_type() {
                Some(Type::Directory) => may_descend && name != "." && name != "..",
                Some(Type::File) | None => self.opts.select.wants(name),
                _ => false,
            };
            if worth {
                self.refresh(wd, name);
            }
        }
        for name in known {
            self.refresh(wd, &name);
        }
    }

    /// Look at `name` in the directory again and follow what is there now.
    fn refresh(&mut self, wd: WatchDescriptor, name: &OsStr) {
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        let depth = dir.depth;
        let kind = fstatat(dir.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()));
        match kind {
            Some(SFlag::S_IFDIR) if depth < self.opts.depth => self.place_dir(wd, name),
            Some(SFlag::S_IFREG) if self.opts.select.wants(name) => self.place_file(wd, name),
            Some(other) if other != SFlag::S_IFDIR && self.opts.select.wants(name) => {
                let shown = self.shown(&dir.rel.join(name));
                log::debug!("{shown}: not a regular file (a link, FIFO or device): not streamed");
                self.forget_child(wd, name);
            }
            _ => self.forget_child(wd, name),
        }
    }

    fn place_dir(&mut self, wd: WatchDescriptor, name: &OsStr) {
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        // O_NOFOLLOW|O_DIRECTORY: whatever is at the name now must be a
        // real directory, or nothing is opened.
        let Ok(fd) = openat(dir.fd.as_fd(), name, DIR_FLAGS, Mode::empty()) else {
            return self.forget_child(wd, name);
        };
        let Ok(st) = fstat(fd.as_fd()) else { return };
        if let Some(sub) = dir.subdirs.get(name).and_then(|s| self.dirs.get(s)) {
            let same =
                fstat(sub.fd.as_fd()).is_ok_and(|o| (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino));
            if same {
                return;
            }
        }
        let (rel, depth) = (dir.rel.join(name), dir.depth + 1);
        self.forget_child(wd, name);
        if let Ok(sub) = self.add_dir(fd, rel, depth)
            && let Some(dir) = self.dirs.get_mut(&wd)
        {
            dir.subdirs.insert(name.to_owned(), sub);
        }
    }

    fn place_file(&mut self, wd: WatchDescriptor, name: &OsStr) {
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        let Ok(fd) = openat(dir.fd.as_fd(), name, FILE_FLAGS, Mode::empty()) else {
            return self.forget_child(wd, name);
        };
        let file = File::from(fd);
        let Ok(meta) = file.metadata() else { return };
        let id = FileId::of(&meta);
        let rel = dir.rel.join(name);
        if dir.files.get(name) == Some(&id) {
            return;
        }
        if !meta.file_type().is_file() {
            // Swapped for a FIFO or device since the stat: O_NONBLOCK let
            // the open return; whatever was followed at the name is gone.
            return self.forget_child(wd, name);
        }
        // A second name of someone else's file: a hard link the job user
        // may have made to a file it cannot read.
        if meta.nlink() > 1 && meta.uid() != dir.owner && !self.files.contains_key(&id) {
            log::warn!(
                "{}: a hard link to a file of uid {}: not streamed",
                self.shown(&rel),
                meta.uid()
            );
            return;
        }
        let label = out::label(rel.as_os_str().as_bytes());
        if !self.files.contains_key(&id) && self.files.len() >= self.limits.files {
            return self.bound_reached("files", self.limits.files, &rel);
        }
        self.forget_child(wd, name);
        if let Some(dir) = self.dirs.get_mut(&wd) {
            dir.files.insert(name.to_owned(), id);
        }
        self.homes.insert(id, (wd, name.to_owned()));
        self.ready.insert(id);
        if let Some(known) = self.files.get_mut(&id) {
            // Renamed or moved within the tree: it keeps its place.
            known.names += 1;
            known.label = label;
            return;
        }
        let pos = self.start_pos(&file, meta.len());
        self.files.insert(id, Followed::new(file, id, label, pos));
    }

    fn start_pos(&mut self, file: &File, len: u64) -> u64 {
        match (self.at_start, self.opts.start) {
            (false, _) | (true, Start::Beginning) => 0,
            (true, Start::End) => len,
            (true, Start::LastLines(n)) => {
                last_lines_start(file, len, n, &mut self.buf).unwrap_or(0)
            }
        }
    }

    fn forget_child(&mut self, wd: WatchDescriptor, name: &OsStr) {
        let Some(dir) = self.dirs.get_mut(&wd) else {
            return;
        };
        let (file, sub) = (dir.files.remove(name), dir.subdirs.remove(name));
        if let Some(id) = file {
            self.unname(id);
        }
        if let Some(sub) = sub {
            self.drop_dir(sub);
        }
    }

    fn unname(&mut self, id: FileId) {
        if let Some(f) = self.files.get_mut(&id) {
            f.names = f.names.saturating_sub(1);
            self.unnamed |= f.names == 0;
        }
    }

    /// Stop watching a directory and what is below it; its files stay
    /// until the end of the turn, in case they reappear under another name.
    fn drop_dir(&mut self, wd: WatchDescriptor) {
        let Some(dir) = self.dirs.remove(&wd) else {
            return;
        };
        for id in dir.files.values() {
            self.unname(*id);
        }
        for sub in dir.subdirs.values() {
            self.drop_dir(*sub);
        }
        let _ = self.inotify.rm_watch(wd);
    }

    /// Drop a directory and its entry in its parent.
    fn detach(&mut self, wd: WatchDescriptor) {
        for dir in self.dirs.values_mut() {
            dir.subdirs.retain(|_, sub| *sub != wd);
        }
        self.drop_dir(wd);
    }

    fn bound_reached(&mut self, what: &str, bound: usize, rel: &Path) {
        if !self.full {
            log::warn!(
                "{bound} {what} followed, the most this process may hold: {} and any further ones are not streamed until some go away",
                self.shown(rel)
            );
        }
        self.full = true;
    }

    fn shown(&self, rel: &Path) -> String {
        let full = self.base.path().join("sys/log").join(rel);
        let path = if self.opts.root.as_os_str().is_empty() {
            rel
        } else {
            &full
        };
        String::from_utf8_lossy(&out::label(path.as_os_str().as_bytes())).into_owned()
    }

    /// Take what inotify reports; false when the root has gone and cannot
    /// be opened again.
    pub fn read_events(&mut self) -> io::Result<()> {
        for _ in 0..EVENT_READS {
            match self.inotify.read_events() {
                Ok(events) => events.into_iter().for_each(|ev| self.event(ev)),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.root_lost {
            self.root_lost = false;
            log::warn!(
                "{} was removed or moved: watching it anew",
                self.shown(Path::new(""))
            );
            if let Some(root) = self.root.take() {
                self.drop_dir(root);
            }
            self.open_root()?;
        }
        if std::mem::take(&mut self.rescan) {
            self.full = false;
            let wds: Vec<WatchDescriptor> = self.dirs.keys().copied().collect();
            wds.into_iter().for_each(|wd| self.list(wd));
        }
        Ok(())
    }

    fn event(&mut self, ev: InotifyEvent) {
        if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            self.rescan = true;
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd) else {
            return;
        };
        match ev.name {
            Some(name) if ev.mask.contains(AddWatchFlags::IN_MODIFY) => {
                if let Some(id) = dir.files.get(&name) {
                    self.ready.insert(*id);
                }
            }
            Some(name) => self.refresh(ev.wd, &name),
            None if Some(ev.wd) == self.root => {
                let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
                self.root_lost |= ev.mask.intersects(gone | AddWatchFlags::IN_IGNORED);
            }
            None => {}
        }
    }

    /// Files with something to stream, taken from the set.
    pub fn take_ready(&mut self) -> Vec<FileId> {
        self.ready.drain().collect()
    }

    pub fn mark_ready(&mut self, id: FileId) {
        self.ready.insert(id);
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn ids(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }

    pub fn file_mut(&mut self, id: FileId) -> Option<&mut Followed> {
        self.files.get_mut(&id)
    }

    /// The file with its directory's fd and its name there, while that
    /// name still leads to it.
    pub fn with_home(&mut self, id: FileId) -> Option<(BorrowedFd<'_>, &OsStr, &mut Followed)> {
        let (wd, name) = self.homes.get(&id)?;
        let dir = self.dirs.get(wd)?;
        if dir.files.get(name) != Some(&id) {
            return None;
        }
        Some((dir.fd.as_fd(), name.as_os_str(), self.files.get_mut(&id)?))
    }

    /// The earliest moment an unfinished last line is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files.values().filter_map(Followed::deadline).min()
    }

    pub fn due(&self, now: Instant) -> Vec<FileId> {
        let due = |f: &&Followed| f.deadline().is_some_and(|d| d <= now);
        self.files.values().filter(due).map(|f| f.id).collect()
    }

    /// Files no name of the tree leads to any more: what they still hold
    /// is streamed, then they are closed.
    pub fn reap(&mut self, out: &mut Out) {
        if !std::mem::take(&mut self.unnamed) {
            return;
        }
        let gone: Vec<FileId> = self
            .files
            .values()
            .filter(|f| f.names == 0)
            .map(|f| f.id)
            .collect();
        for id in &gone {
            if let Some(mut f) = self.files.remove(id) {
                let _ = f.pump(&mut self.buf, out, DRAIN_READS, true);
            }
            self.homes.remove(id);
            self.ready.remove(id);
        }
        // Room again: names skipped at the bound are looked for anew.
        self.rescan |= self.full && !gone.is_empty();
    }

    /// Whether a rescan waits (after a bound made room).
    pub fn rescan_due(&self) -> bool {
        self.rescan
    }
}
