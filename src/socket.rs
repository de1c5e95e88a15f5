//! The control socket (SPEC sections 2 and 3): bound once for container-run's
//! whole life, never stolen from a live peer, removed at exit only if it is
//! still ours. Datagrams are read and replies sent without ever blocking.
//! If someone deletes the socket file, an inotify watch on its directory
//! tells the event loop, and the socket is bound again under its name.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::error::Fatal;
use crate::protocol::MAX_DATAGRAM;

pub struct ControlSocket {
    sock: UnixDatagram,
    path: PathBuf,
    mode: u32,
    group: Option<u32>,
    /// Device and inode of the socket file we bound, to recognise it at exit.
    identity: (u64, u64),
    buf: Vec<u8>,
    /// Tells when the socket file or its directory is removed or renamed.
    watch: Option<Inotify>,
}

const WATCHED: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

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

pub fn probe(path: &Path) -> Occupant {
    match std::fs::symlink_metadata(path) {
        Err(_) => Occupant::Nothing,
        Ok(m) if !m.file_type().is_socket() => Occupant::NotASocket,
        Ok(_) => match UnixDatagram::unbound().and_then(|s| s.connect(path)) {
            Ok(()) => Occupant::Live,
            Err(_) => Occupant::Stale,
        },
    }
}

impl ControlSocket {
    /// Bind under a temporary name, set the mode, then hard-link it to the
    /// real name: `link` fails if the name exists, so two container-runs
    /// racing for one socket cannot both win, and the socket never appears
    /// with the wrong mode.
    pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<ControlSocket, Fatal> {
        let (sock, identity) = Self::bind_exclusive(path, mode, group)?;
        let mut control = ControlSocket {
            sock,
            path: path.to_path_buf(),
            mode,
            group,
            identity,
            buf: vec![0; MAX_DATAGRAM + 1],
            watch: None,
        };
        control.watch = control.new_watch();
        Ok(control)
    }

    fn bind_exclusive(
        path: &Path,
        mode: u32,
        group: Option<u32>,
    ) -> Result<(UnixDatagram, (u64, u64)), Fatal> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".crsock{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let sock = UnixDatagram::bind(&tmp)
            .map_err(|e| Fatal::setup(format!("cannot bind {}", tmp.display()), e))?;
        let result = Self::publish(&tmp, path, mode, group);
        let _ = std::fs::remove_file(&tmp);
        let identity = result?;
        sock.set_nonblocking(true)
            .map_err(|e| Fatal::setup("cannot make the socket non-blocking", e))?;
        Ok((sock, identity))
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

    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.st_dev(), m.st_ino()) == self.identity)
    }

    /// Called when the watch is readable: if the socket file is gone or is
    /// no longer ours, bind it again (unless a live container-run now holds
    /// the name), so that operators can reach this container-run again.
    pub fn on_watch_event(&mut self) {
        let Some(watch) = &self.watch else {
            return;
        };
        let name = self.path.file_name().map(|n| n.to_os_string());
        let mut relevant = false;
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
                relevant |= e.name == name;
            }
        }
        if !(relevant || watch_lost) || self.still_ours() {
            return;
        }
        log::warn!(
            "control socket {} was removed: binding it again",
            self.path.display()
        );
        if let Some(dir) = self.path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            log::error!("cannot re-create {}: {e}", dir.display());
        }
        match Self::bind_exclusive(&self.path, self.mode, self.group) {
            Ok((sock, identity)) => {
                self.sock = sock;
                self.identity = identity;
            }
            Err(e) => log::error!("cannot bind the control socket again: {e}"),
        }
        if watch_lost {
            self.watch = self.new_watch();
        }
    }

    fn publish(
        tmp: &Path,
        path: &Path,
        mode: u32,
        group: Option<u32>,
    ) -> Result<(u64, u64), Fatal> {
        if let Some(gid) = group {
            std::os::unix::fs::chown(tmp, None, Some(gid)).map_err(|e| {
                Fatal::setup(format!("cannot give {} to group {gid}", tmp.display()), e)
            })?;
        }
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Fatal::setup(format!("cannot set the mode of {}", tmp.display()), e))?;
        // Bounded: each round either links or removes a stale file.
        for _ in 0..3 {
            match std::fs::hard_link(tmp, path) {
                Ok(()) => {
                    let m = std::fs::symlink_metadata(path)
                        .map_err(|e| Fatal::setup(path.display(), e))?;
                    return Ok((m.st_dev(), m.st_ino()));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match probe(path) {
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
                        let _ = std::fs::remove_file(path);
                    }
                    Occupant::Nothing => {}
                },
                Err(e) => {
                    return Err(Fatal::setup(format!("cannot create {}", path.display()), e));
                }
            }
        }
        Err(Fatal::Setup(format!(
            "{} keeps reappearing: another container-run is starting with the same job and process",
            path.display()
        )))
    }

    /// The next datagram, if any: `Ok(None)` when the queue is empty.
    /// Oversized datagrams come back as an empty payload (ignored).
    pub fn recv(&mut self) -> io::Result<Option<(&[u8], SocketAddr)>> {
        let (n, addr) = loop {
            match self.sock.recv_from(&mut self.buf) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let payload: &[u8] = if n > MAX_DATAGRAM {
            &[]
        } else {
            &self.buf[..n]
        };
        Ok(Some((payload, addr)))
    }

    /// Reply to a sender that has an address; never blocks, and a sender
    /// that is gone or whose queue is full simply gets nothing.
    pub fn reply(&self, to: &SocketAddr, line: &str) {
        if to.is_unnamed() {
            return;
        }
        if let Err(e) = self.sock.send_to_addr(line.as_bytes(), to) {
            log::debug!("reply not delivered: {e}");
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for ControlSocket {
    /// Remove the socket file only if it is still the one we bound: another
    /// container-run may have replaced it since.
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.st_dev(), m.st_ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
