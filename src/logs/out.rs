//! The stream's one writer, stdout: `PATH: LINE` records for the logs
//! mode, or tail's layout (raw bytes under `==> NAME <==` headers) for
//! `bpm logs`. Keeps: records leave in the order they were made, each
//! whole; once stdout is gone (a reader that went away) nothing more is
//! written and the mode ends quietly.

use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{BorrowedFd, FromRawFd};

/// Written out once this much waits, and at the end of every turn of the
/// loop, so a quiet moment never holds a line back. A default pipe's size:
/// one write never holds more than the container runtime's pipe takes at
/// once (bench/logs: 128 KiB writes cost more CPU per MB than tail -F,
/// 64 KiB ones less).
const FLUSH_AT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `PATH: LINE`, one record per line (the logs mode).
    Records,
    /// Bytes as they are, a `==> NAME <==` header when the file changes
    /// (bpm logs, which ran tail).
    Tail { headers: bool },
}

pub struct Out {
    buf: Vec<u8>,
    style: Style,
    /// The label of the file whose bytes went out last (tail's headers).
    last: Option<Vec<u8>>,
    closed: bool,
    flush_at: usize,
}

impl Out {
    pub fn new(style: Style) -> Out {
        Out {
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024 + 4096),
            style,
            last: None,
            closed: false,
            flush_at: FLUSH_AT,
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// One line (or a 64 KiB piece of one) of the file `label`; a newline
    /// is added when the line has none (a piece, or a last line cut off).
    pub fn record(&mut self, label: &[u8], line: &[u8]) {
        self.buf.extend_from_slice(label);
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(line);
        if line.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
        self.maybe_flush();
    }

    /// Every complete line of `data` as a record; how many bytes they
    /// took. The hot path of the mode: one pass, two copies per line.
    pub fn lines(&mut self, label: &[u8], data: &[u8]) -> usize {
        let mut prefix = Vec::with_capacity(label.len() + 2);
        prefix.extend_from_slice(label);
        prefix.extend_from_slice(b": ");
        let mut used = 0;
        while let Some(nl) = newline(&data[used..]) {
            self.buf.extend_from_slice(&prefix);
            self.buf.extend_from_slice(&data[used..used + nl + 1]);
            used += nl + 1;
            self.maybe_flush();
        }
        used
    }

    /// Bytes of `label` as they are, under its header when it changed.
    pub fn raw(&mut self, label: &[u8], bytes: &[u8]) {
        if self.style == (Style::Tail { headers: true }) && self.last.as_deref() != Some(label) {
            if self.last.is_some() {
                self.buf.push(b'\n');
            }
            self.buf.extend_from_slice(b"==> ");
            self.buf.extend_from_slice(label);
            self.buf.extend_from_slice(b" <==\n");
            self.last = Some(label.to_vec());
        }
        self.buf.extend_from_slice(bytes);
        self.maybe_flush();
    }

    fn maybe_flush(&mut self) {
        if self.buf.len() >= self.flush_at {
            self.flush();
        }
    }

    /// Write what waits; false once stdout is gone.
    pub fn flush(&mut self) -> bool {
        if self.closed {
            self.buf.clear();
            return false;
        }
        if let Err(e) = write_stdout(&self.buf) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                log::warn!("cannot write to stdout: {}", crate::error::os_phrase(&e));
            }
            self.closed = true;
        }
        self.buf.clear();
        !self.closed
    }
}

#[cfg(test)]
impl Out {
    /// An Out that keeps what it is given, for unit tests to read.
    pub fn held(style: Style) -> Out {
        Out {
            flush_at: usize::MAX,
            ..Out::new(style)
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// All of `bytes` to fd 1, waiting for room when it is non-blocking.
fn write_stdout(mut bytes: &[u8]) -> io::Result<()> {
    // SAFETY: fd 1 stays open for the process's life; ManuallyDrop keeps
    // this File from closing it.
    let mut stdout = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    while !bytes.is_empty() {
        match stdout.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable()?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn wait_writable() -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // SAFETY: fd 1 stays open for the process's life.
    let fd = unsafe { BorrowedFd::borrow_raw(1) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where the first newline is: the C library's memchr, vectorised, where
/// a byte-at-a-time search made line splitting most of the mode's CPU.
fn newline(data: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most `data.len()` bytes of a valid slice.
    let p = unsafe { libc::memchr(data.as_ptr().cast(), b'\n' as i32, data.len()) };
    (!p.is_null()).then(|| p as usize - data.as_ptr() as usize)
}

/// A path as a label: control characters escaped (`\x0a`), so that a file
/// name cannot forge or break a record; other bytes as they are.
pub fn label(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b < 0x20 || b == 0x7f || b == b'\\' {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escape_control_characters() {
        assert_eq!(label(b"rep/rep.stdout.log"), b"rep/rep.stdout.log");
        assert_eq!(label(b"a\nb: c.log"), b"a\\x0ab: c.log");
        assert_eq!(label(b"x\\y\x7f"), b"x\\x5cy\\x7f");
    }

    #[test]
    fn tail_headers_only_when_the_file_changes() {
        let mut out = Out::held(Style::Tail { headers: true });
        out.raw(b"a.log", b"1\n");
        out.raw(b"a.log", b"2\n");
        out.raw(b"b.log", b"3\n");
        assert_eq!(out.buf, b"==> a.log <==\n1\n2\n\n==> b.log <==\n3\n");
        let mut out = Out::held(Style::Records);
        out.record(b"a.log", b"x\n");
        out.record(b"a.log", b"piece");
        assert_eq!(out.buf, b"a.log: x\na.log: piece\n");
    }
}
