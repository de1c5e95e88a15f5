//! Where a client finds a container-run (SPEC section 3, "Who is
//! believed"): first at its rendezvous names, which the job's user cannot
//! rename, replace or hide (`crate::rendezvous`); at the socket's name in
//! `BASE/data/JOB` only when no rendezvous name is bound (to say why
//! nothing answers: no socket, a stale one, not a socket) or with
//! `--socket`. A name is never followed: a socket file is opened as a file
//! without following a link and reached through that very file.
//!
//! A place found here is only where to ask: whoever answers there is
//! believed only by its credentials (`session`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

use super::Outcome;
use crate::datagram::{self, NotReachable};
use crate::error::{Fatal, os_phrase};
use crate::paths::Paths;
use crate::rendezvous::{Listing, Pod};

/// Places asked for one target at most: a job user who binds more
/// look-alike names makes a client say so, not use more fds.
pub const MAX_PLACES: usize = 16;

/// One place to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A rendezvous name (without its leading NUL).
    Abstract(Vec<u8>),
    /// A socket file: `name` in `dir`; `dir` below `base` (opened without
    /// following links) when given, else as the operator named it.
    File {
        base: Option<PathBuf>,
        dir: PathBuf,
        name: OsString,
    },
}

impl Place {
    /// How messages name it: `@container-run/…` or the path.
    pub fn shown(&self) -> String {
        match self {
            Place::Abstract(name) => format!("@{}", super::escape(&String::from_utf8_lossy(name))),
            Place::File { base, dir, name } => {
                let full = match base {
                    Some(base) => base.join(dir).join(name),
                    None => dir.join(name),
                };
                super::escape(&full.display().to_string())
            }
        }
    }

    /// A socket connected to this place, for waiting until its queue has
    /// room (`POLLOUT`); and the address to send to from a reply socket.
    pub fn open(&self) -> Result<Opened, NotReachable> {
        match self {
            Place::Abstract(name) => {
                let addr = nix::sys::socket::UnixAddr::new_abstract(name)
                    .map_err(|e| NotReachable::Io(e.into()))?;
                Opened::connect(addr, None)
            }
            Place::File { base, dir, name } => {
                let dir_fd = match base {
                    Some(base) => crate::state_files::Base::open(base, false)
                        .and_then(|base| base.open_beneath(dir, false)),
                    None => openat(
                        AT_FDCWD,
                        dir.as_path(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(std::io::Error::from),
                }
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => NotReachable::Missing,
                    _ => NotReachable::Io(e),
                })?;
                let file = datagram::open_socket_file(dir_fd.as_fd(), name)?;
                let via = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
                let addr = nix::sys::socket::UnixAddr::new(via.as_str())
                    .map_err(|e| NotReachable::Io(e.into()))?;
                Opened::connect(addr, Some(file))
            }
        }
    }
}

/// A place opened for a session: where to send, and a socket connected
/// there whose writability says that the place's queue has room (it never
/// sends: a socket connected to a container-run would make it answer from
/// its own socket instead of a fresh one).
pub struct Opened {
    pub addr: nix::sys::socket::UnixAddr,
    pub waiter: UnixDatagram,
    /// The socket file reached, held open so `/proc/self/fd/N` stays it.
    _file: Option<OwnedFd>,
}

impl Opened {
    fn connect(
        addr: nix::sys::socket::UnixAddr,
        file: Option<OwnedFd>,
    ) -> Result<Opened, NotReachable> {
        let waiter = UnixDatagram::unbound().map_err(NotReachable::Io)?;
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&waiter), &addr)
            .map_err(|e| NotReachable::Io(e.into()))?;
        waiter.set_nonblocking(true).map_err(NotReachable::Io)?;
        Ok(Opened {
            addr,
            waiter,
            _file: file,
        })
    }
}

/// Where to reach one target, or why there is nowhere to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    At(Vec<Place>),
    Nowhere(Outcome),
}

/// The pod's rendezvous names, listed once per command.
pub struct PodNames {
    pub pod: Pod,
    pub listing: Listing,
}

/// `BASE/data`'s pod and its names now bound by a uid `trust` believes
/// (names of other owners are left out before anything is asked: they
/// cannot crowd the real ones out, cost time, or receive a command). A
/// missing `BASE/data` is no error of the caller's: nothing runs there
/// (exit 3).
pub fn pod_names(base: &Path, trust: &datagram::Trust) -> Result<PodNames, Fatal> {
    let data = base.join("data");
    let pod = crate::rendezvous::pod_of(base).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Fatal::NoAnswer(format!(
            "no container-run socket under {}: no such directory",
            super::escape(&data.display().to_string())
        )),
        _ => Fatal::Setup(format!(
            "cannot read {}: {}",
            super::escape(&data.display().to_string()),
            os_phrase(&e)
        )),
    })?;
    let listing = pod.list_believed(trust).map_err(|e| {
        Fatal::Setup(format!(
            "cannot list the pod's container-runs ({}): {}",
            "/proc/net/unix",
            os_phrase(&e)
        ))
    })?;
    Ok(PodNames { pod, listing })
}

/// Where JOB/PROCESS is reached: its rendezvous names, else the socket's
/// name in `BASE/data/JOB` when something live is there (an answer from it
/// is believed only by its credentials), else why nothing answers.
pub fn named(paths: &Paths, names: Option<&PodNames>) -> Reach {
    if let Some(names) = names {
        let mut found = names
            .listing
            .under(&names.pod.prefix_for(&paths.job, &paths.process));
        if !found.is_empty() {
            found.truncate(MAX_PLACES);
            return Reach::At(found.into_iter().map(Place::Abstract).collect());
        }
    }
    let rel = paths
        .data_dir
        .strip_prefix(&paths.base)
        .unwrap_or(&paths.data_dir);
    let place = Place::File {
        base: Some(paths.base.clone()),
        dir: rel.to_path_buf(),
        name: paths.socket.file_name().unwrap_or_default().to_os_string(),
    };
    at_file(place, false)
}

/// `--socket PATH`: that file, never through a link at its name.
pub fn at_socket(path: &Path) -> Reach {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    at_file(
        Place::File {
            base: None,
            dir,
            name,
        },
        true,
    )
}

/// A socket file as a place: reachable only when something is bound there.
fn at_file(place: Place, by_path: bool) -> Reach {
    let shown = place.shown();
    let why = match place.open() {
        Ok(_) => return Reach::At(vec![place]),
        Err(NotReachable::Missing) if by_path => "no such file".to_string(),
        Err(NotReachable::Missing) => {
            format!("no socket at {shown}: is container-run running with this job and process?")
        }
        Err(NotReachable::NotASocket(what)) if by_path => format!("not a socket: {what}"),
        Err(NotReachable::NotASocket(what)) => format!("not a socket: {shown} is {what}"),
        Err(NotReachable::Io(e)) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) if by_path => {
                "nothing listens: a stale socket file, container-run is not running".to_string()
            }
            Some(libc::ECONNREFUSED) => format!(
                "nothing listens on {shown}: a stale socket file, container-run is not running"
            ),
            Some(libc::EACCES | libc::EPERM) => {
                return Reach::Nowhere(Outcome::Failed(if by_path {
                    "permission denied: run as the socket's owner or group".to_string()
                } else {
                    format!("permission denied on {shown}: run as the socket's owner or group")
                }));
            }
            _ => format!("cannot reach {shown}: {}", os_phrase(&e)),
        },
    };
    Reach::Nowhere(Outcome::NoAnswer(why))
}

/// Socket files under `BASE/data/*/` that a believed uid owns: what
/// container-runs of the pod leave beside their rendezvous names. Looked at
/// as they are read (the entry's type first, then its owner, without
/// following a link), and at most `MAX_LISTED` kept, so that names the job
/// user plants cost a listing neither memory nor time in proportion.
pub fn socket_files(base: &Path, trust: &datagram::Trust) -> Vec<Paths> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let Ok(jobs) = std::fs::read_dir(base.join("data")) else {
        return found;
    };
    for job in jobs.flatten() {
        // A link planted at a job's name is no job directory.
        if !job.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(job.path()) else {
            continue;
        };
        for f in files.flatten() {
            if found.len() == crate::rendezvous::MAX_LISTED {
                return found;
            }
            let name = f.file_name();
            let Some(process) = name
                .to_str()
                .and_then(|n| n.strip_suffix("_containerrun.sock"))
            else {
                continue;
            };
            let believed = f.file_type().is_ok_and(|t| t.is_socket())
                && std::fs::symlink_metadata(f.path())
                    .is_ok_and(|m| m.file_type().is_socket() && trust.believes_uid(m.uid()));
            if believed
                && let Some(job) = job.file_name().to_str()
                && let Ok(paths) = Paths::new(base, job, process)
            {
                found.push(paths);
            }
        }
    }
    found
}

/// JOB/PROCESS of a rendezvous name, from the socket files the pod's
/// container-runs left (`socket_files`): how a name that does not answer
/// keeps its row.
pub fn owner_of<'a>(name: &[u8], names: &PodNames, files: &'a [Paths]) -> Option<&'a Paths> {
    files
        .iter()
        .find(|p| name.starts_with(names.pod.prefix_for(&p.job, &p.process).as_bytes()))
}
