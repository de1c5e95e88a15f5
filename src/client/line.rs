//! One place of a client's session: the socket it sends from, and the
//! commands that still wait to go because the place's queue was full.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, sendto};

use super::Outcome;
use super::reach::{Opened, Place};
use crate::datagram;
use crate::error::os_phrase;
use crate::protocol::ControlCommand;

/// One place of a session: where it sends from and what still waits to go.
pub(super) struct Line {
    pub place: Place,
    pub opened: Opened,
    pub sock: UnixDatagram,
    pub pending: VecDeque<ControlCommand>,
    /// Since when its queue has been full.
    pub full_since: Option<Instant>,
}

impl Line {
    pub fn open(place: &Place, commands: &[ControlCommand]) -> Result<Line, Box<Outcome>> {
        let opened = place
            .open()
            .map_err(|e| Box::new(Outcome::NoAnswer(format!("{}: {e}", place.shown()))))?;
        let sock = datagram::reply_socket().map_err(|e| {
            Box::new(Outcome::Failed(format!(
                "cannot bind a reply address: {}",
                os_phrase(&e)
            )))
        })?;
        Ok(Line {
            place: place.clone(),
            opened,
            sock,
            pending: commands.iter().copied().collect(),
            full_since: None,
        })
    }

    /// Send what waits, in order, until the queue is full. `Err` when the
    /// place cannot be sent to at all.
    pub fn flush(&mut self, now: Instant) -> Result<(), Errno> {
        while let Some(cmd) = self.pending.front() {
            match sendto(
                self.sock.as_raw_fd(),
                cmd.as_str().as_bytes(),
                &self.opened.addr,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    self.pending.pop_front();
                    self.full_since = None;
                }
                Err(Errno::EAGAIN) => {
                    self.full_since.get_or_insert(now);
                    return Ok(());
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Why a place cannot be sent to.
pub(super) fn send_error(place: &Place, e: Errno, by_socket: bool) -> Outcome {
    let shown = place.shown();
    match e {
        Errno::ECONNREFUSED | Errno::ENOENT => Outcome::NoAnswer(if by_socket {
            "nothing listens: a stale socket file, container-run is not running".into()
        } else {
            format!("nothing listens on {shown}: container-run is not running")
        }),
        Errno::EACCES | Errno::EPERM => Outcome::Failed(if by_socket {
            "permission denied: run as the socket's owner or group".into()
        } else {
            format!("permission denied on {shown}: run as the socket's owner or group")
        }),
        e => Outcome::Failed(format!("cannot send to {shown}: {}", os_phrase(&e.into()))),
    }
}
