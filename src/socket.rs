//! The control socket (SPEC sections 2 and 3): bound once for container-run's
//! whole life, never stolen from a live peer, removed at exit only if it is
//! still ours. Datagrams are read and replies sent without ever blocking.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use crate::error::Fatal;
use crate::protocol::MAX_DATAGRAM;

pub struct ControlSocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// Device and inode of the socket file we bound, to recognise it at exit.
    identity: (u64, u64),
    buf: Vec<u8>,
}

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
    pub fn bind(path: &Path, mode: u32) -> Result<ControlSocket, Fatal> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".crsock{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let sock = UnixDatagram::bind(&tmp)
            .map_err(|e| Fatal::setup(format!("cannot bind {}", tmp.display()), e))?;
        let result = Self::publish(&tmp, path, mode);
        let _ = std::fs::remove_file(&tmp);
        let identity = result?;
        sock.set_nonblocking(true)
            .map_err(|e| Fatal::setup("cannot make the socket non-blocking", e))?;
        Ok(ControlSocket {
            sock,
            path: path.to_path_buf(),
            identity,
            buf: vec![0; MAX_DATAGRAM + 1],
        })
    }

    fn publish(tmp: &Path, path: &Path, mode: u32) -> Result<(u64, u64), Fatal> {
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
