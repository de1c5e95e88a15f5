//! The files of SPEC section 2 besides the socket: the `.running` sentinel,
//! the pidfile, the STOP marker and the installed `bpm`/`monit` links, and
//! the one way container-run reaches a directory under BASE: a `Base`, the
//! value that holds BASE's fd, owned beside the `Paths` by whoever writes
//! there (no global holds it). The job's user may own those directories:
//! every directory below BASE is opened component by component with
//! O_NOFOLLOW, and every file operation is relative to the directory's fd,
//! so that nothing outside BASE is ever created, written, truncated or
//! deleted, whatever that user plants (docs/reliability.md).

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use crate::paths::Paths;

/// Mode of the sentinel, pidfile and STOP marker whatever the umask:
/// readers (`bpm pid`, probes) may run as any user.
pub const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// 64 random bits as hex: temporary names that nobody can plant a link at
/// in advance (as PID 1, a pid suffix is always `1`). One `getrandom` per
/// name: about 0.4 us, against the tens of microseconds of the file
/// operations each name is for, and nothing kept between calls.
pub fn random_suffix() -> io::Result<String> {
    let mut bits = [0u8; 8];
    // SAFETY: the buffer is valid for its length; getrandom only writes it.
    let n = unsafe { libc::getrandom(bits.as_mut_ptr().cast(), bits.len(), 0) };
    if n != bits.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bits.iter().map(|b| format!("{b:02x}")).collect())
}

/// The process's umask, read once (setting it back at once; container-run
/// has one thread when it first writes a file).
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        // SAFETY: umask cannot fail; the old value is restored at once.
        unsafe {
            let old = libc::umask(0o077);
            libc::umask(old);
            old as u32
        }
    })
}

/// BASE, opened once: the operator chose it and it may belong to root;
/// everything below it is opened relative to this fd. Owned by whoever
/// writes under BASE (the supervisor, beside its `Paths`), and lent or
/// cloned to what needs it (the control socket).
#[derive(Debug)]
pub struct Base {
    path: PathBuf,
    fd: OwnedFd,
    /// Cleared once `openat2` turned out to be unavailable (kernel before
    /// 5.6, or a seccomp profile that refuses it).
    openat2: Cell<bool>,
}

fn open_base(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let open = || {
        openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    };
    match open() {
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)?;
            open()
        }
        other => other,
    }
}

impl Base {
    /// Open BASE, creating it when `create` and it is missing.
    pub fn open(path: &Path, create: bool) -> io::Result<Base> {
        Ok(Base {
            path: path.to_path_buf(),
            fd: open_base(path, create)?,
            openat2: Cell::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn try_clone(&self) -> io::Result<Base> {
        Ok(Base {
            path: self.path.clone(),
            fd: self.fd.try_clone()?,
            openat2: self.openat2.clone(),
        })
    }

    /// Open the directory `rel` below BASE without following a symbolic
    /// link anywhere below BASE, creating what is missing when `create`.
    /// One `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` when the kernel
    /// has it and everything exists; otherwise component by component with
    /// O_NOFOLLOW, and `mkdirat` for what is missing. The directory is
    /// opened anew for each use, so one the job user swaps later is never
    /// written through an old fd for long.
    pub fn open_beneath(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain path below BASE", rel.display()),
            ));
        }
        if self.openat2.get() {
            match openat2_beneath(&self.fd, rel) {
                Ok(dir) => return Ok(dir),
                Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG | Errno::EINVAL) => {
                    self.openat2.set(false);
                }
                // Missing (BASE itself may have been deleted and made again)
                // or a link: the walk below creates or names the culprit.
                Err(_) => {}
            }
        }
        match walk(&self.fd, rel, create) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                walk(&open_base(&self.path, create)?, rel, create)
            }
            other => other,
        }
    }

    /// The directory holding `file` (a path of `paths`) and the file's name.
    pub fn open_parent<'a>(
        &self,
        file: &'a Path,
        create: bool,
    ) -> io::Result<(OwnedFd, &'a OsStr)> {
        let parent = file.parent().unwrap_or(Path::new(""));
        let rel = parent
            .strip_prefix(&self.path)
            .map_err(|_| io::Error::other(format!("{} is not under BASE", file.display())))?;
        let name = file
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} has no file name", file.display())))?;
        Ok((self.open_beneath(rel, create)?, name))
    }
}

fn openat2_beneath(base: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let path = std::ffi::CString::new(rel.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path, and a pointer to `how`
    // with its size; the returned fd is owned here.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base.as_raw_fd(),
            path.as_ptr(),
            &how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn walk(base: &OwnedFd, rel: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut dir = openat(base.as_fd(), ".", DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
    for component in rel.components() {
        dir = open_child_dir(dir.as_fd(), component.as_os_str(), create)?;
    }
    Ok(dir)
}

fn open_child_dir(parent: BorrowedFd, name: &OsStr, create: bool) -> io::Result<OwnedFd> {
    let open = || {
        openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => io::Error::other(format!(
                "{} is not a directory (a symbolic link?): not following it",
                name.to_string_lossy()
            )),
            e => io::Error::from(e),
        })
    };
    match open() {
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let created = match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(io::Error::from(e)),
    };
    let fd = open()?;
    if created {
        // An explicit mode: the umask may be anything, 000 included.
        fchmod(fd.as_fd(), Mode::from_bits_truncate(DIR_MODE)).map_err(io::Error::from)?;
    }
    Ok(fd)
}

/// Write `contents` under `name` in `dir` so that readers see the whole file
/// or none (see `write_with`).
pub fn write_in(dir: BorrowedFd, name: &OsStr, contents: &[u8], mode: u32) -> io::Result<()> {
    write_with(dir, name, mode, |file| file.write_all(contents))
}

/// Create `name` in `dir` with what `fill` writes: a temporary with an
/// unpredictable name, created O_EXCL|O_NOFOLLOW (a link planted anywhere
/// is never followed), its mode set through its fd, closed, then renamed in
/// the same directory. Closed before it gets its name, because an exec of a
/// file that a process still has open for writing fails with "Text file
/// busy" (`container-run install`'s binary).
pub fn write_with(
    dir: BorrowedFd,
    name: &OsStr,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}", random_suffix()?));
    // Created with the final mode when the umask leaves it whole, else
    // 0600 and then the mode through the fd: never wider than asked.
    let whole = mode & umask() == 0;
    let fd = openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(if whole { mode } else { 0o600 }),
    )
    .map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    let result = if whole {
        Ok(())
    } else {
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(io::Error::from)
    }
    .and_then(|()| fill(&mut file))
    .and_then(|()| {
        drop(file);
        renameat(dir, tmp.as_os_str(), dir, name).map_err(io::Error::from)
    });
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Remove `name` from `dir`; a name that is already gone is no error.
/// `unlinkat` removes a planted link itself, never what it points to.
pub fn remove_in(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn write_file(base: &Base, file: &Path, contents: &[u8]) -> io::Result<()> {
    let (dir, name) = base.open_parent(file, true)?;
    write_in(dir.as_fd(), name, contents, FILE_MODE)
}

fn remove_file(base: &Base, file: &Path) -> io::Result<()> {
    match base.open_parent(file, false) {
        Ok((dir, name)) => remove_in(dir.as_fd(), name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sentinel and pidfile: present exactly while the job runs. Not synced:
/// they describe a running container, and a crash of the node ends it too
/// (container-run removes stale ones at start).
pub fn write_run_files(base: &Base, paths: &Paths, pid: i32) -> io::Result<()> {
    write_file(base, &paths.pidfile, format!("{pid}\n").as_bytes())?;
    write_file(base, &paths.running, b"")
}

pub fn remove_run_files(base: &Base, paths: &Paths) -> io::Result<()> {
    let a = remove_file(base, &paths.running);
    let b = remove_file(base, &paths.pidfile);
    a.and(b)
}

/// Whatever sits at the marker's name counts, a link included (it is never
/// followed): the job's user could create the marker anyway.
pub fn hold_in_force(base: &Base, paths: &Paths) -> bool {
    base.open_parent(&paths.stopped, false)
        .is_ok_and(|(dir, name)| fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok())
}

/// Whether the marker at its name is container-run's own: `None` when
/// nothing is there, `Some(true)` for a regular file of container-run's
/// uid (what `write_hold` leaves), `Some(false)` for anything else (a
/// link, a file of the job's user), never followed.
pub fn hold_is_ours(base: &Base, paths: &Paths) -> Option<bool> {
    let (dir, name) = base.open_parent(&paths.stopped, false).ok()?;
    let st = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    Some(regular && st.st_uid == nix::unistd::geteuid().as_raw())
}

/// Not synced either: the marker must outlive the container, and the page
/// cache outlives it; an fsync here would delay every STOP by a disk flush.
pub fn write_hold(base: &Base, paths: &Paths) -> io::Result<()> {
    write_file(base, &paths.stopped, b"STOP\n")
}

pub fn remove_hold(base: &Base, paths: &Paths) -> io::Result<()> {
    remove_file(base, &paths.stopped)
}

/// Create the directories container-run writes into, and prove they are
/// writable now, before anything is started.
pub fn prepare_dirs(base: &Base, paths: &Paths) -> io::Result<()> {
    for dir in [&paths.data_dir, &paths.pid_dir] {
        let rel = dir
            .strip_prefix(base.path())
            .map_err(|_| io::Error::other(format!("{} is not under BASE", dir.display())))?;
        let fd = base.open_beneath(rel, true)?;
        let probe = format!(".container-run-probe.{}", random_suffix()?);
        openat(
            fd.as_fd(),
            probe.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io::Error::from)?;
        remove_in(fd.as_fd(), OsStr::new(&probe))?;
    }
    Ok(())
}

/// Install `BASE/jobs/bpm/bin/bpm` and `BASE/bosh/bin/monit` as symbolic
/// links to this executable, each only when nothing is at its name. A link
/// needs no shell in the job's image and resolves in every container that
/// mounts the volume holding the binary at the same path. `symlinkat`
/// creates the link complete in one step and fails on an existing name
/// without following it. Failure is logged, not fatal: the job itself needs
/// neither.
pub fn install_links(base: &Base, paths: &Paths) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            log::warn!("cannot install bpm and monit: no path to this executable: {e}");
            return;
        }
    };
    for link in [&paths.bpm, &paths.monit] {
        let result = base.open_parent(link, true).and_then(|(dir, name)| {
            match symlinkat(exe.as_os_str(), dir.as_fd(), name) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(io::Error::from(e)),
            }
        });
        match result {
            Ok(true) => log::debug!("installed {}", link.display()),
            Ok(false) => {}
            Err(e) => log::warn!("cannot install {}: {e}", link.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_base(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cr-sf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let base = temp_base("atomic");
        let paths = Paths::new(&base, "j", "p").unwrap();
        let b = Base::open(&base, true).unwrap();
        write_run_files(&b, &paths, 1).unwrap();
        write_run_files(&b, &paths, 22).unwrap();
        assert_eq!(std::fs::read(&paths.pidfile).unwrap(), b"22\n");
        let names: Vec<_> = std::fs::read_dir(&paths.pid_dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        let mode = std::fs::metadata(&paths.pidfile)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        remove_run_files(&b, &paths).unwrap();
        remove_run_files(&b, &paths).unwrap();
        assert!(!paths.pidfile.exists() && !paths.running.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_symlinked_directory_is_not_followed() {
        let base = temp_base("link");
        let elsewhere = temp_base("elsewhere");
        std::fs::create_dir_all(base.join("sys/run/bpm")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.join("sys/run/bpm/j")).unwrap();
        let paths = Paths::new(&base, "j", "p").unwrap();
        let b = Base::open(&base, false).unwrap();
        let err = write_run_files(&b, &paths, 5).unwrap_err();
        assert!(err.to_string().contains("not following"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn the_walk_without_openat2_creates_and_refuses_links() {
        let base = temp_base("walk");
        std::fs::create_dir_all(&base).unwrap();
        let fd = Base::open(&base, false).unwrap().fd;
        walk(&fd, Path::new("a/b/c"), true).unwrap();
        let m = std::fs::metadata(base.join("a/b/c")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, DIR_MODE);
        std::os::unix::fs::symlink("/", base.join("a/l")).unwrap();
        let err = walk(&fd, Path::new("a/l/x"), true).unwrap_err();
        assert!(err.to_string().contains("not following"), "{err}");
        assert!(walk(&fd, Path::new("missing"), false).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn random_suffixes_differ() {
        assert_ne!(random_suffix().unwrap(), random_suffix().unwrap());
        assert_eq!(random_suffix().unwrap().len(), 16);
    }
}
