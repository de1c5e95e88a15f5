//! A `log` backend that writes one line per record to stderr, prefixed so
//! that the container's log tells container-run's lines from the job's.
//! It never blocks the event loop: when stderr is a pipe or socket whose
//! reader has stalled, lines wait in a bounded buffer, further lines are
//! dropped and counted, and the count is reported once the reader drains.
//! The job shares stderr's open file description, so O_NONBLOCK is never
//! set on fd 2 itself: a pipe is reopened through /proc/self/fd/2 (a new
//! open file description of the same pipe), a socket gets MSG_DONTWAIT.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Lines held while the reader stalls; beyond this they are dropped.
const MAX_PENDING_BYTES: usize = 64 * 1024;

enum Sink {
    /// Not initialised (tests, clients): plain blocking stderr.
    Blocking,
    /// A pipe or FIFO, through our own non-blocking description of it.
    Pipe(OwnedFd),
    /// A socket: `send(MSG_DONTWAIT)` on fd 2.
    Socket,
    /// A pipe we could not reopen (no /proc): write only when poll says a
    /// line fits, which holds unless the job fills the pipe in between.
    PolledPipe,
}

struct Writer {
    sink: Sink,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Bytes of the first pending line already written (a partial write).
    written: usize,
    dropped: u64,
}

struct StderrLogger {
    writer: Mutex<Writer>,
}

static LOGGER: StderrLogger = StderrLogger {
    writer: Mutex::new(Writer {
        sink: Sink::Blocking,
        pending: VecDeque::new(),
        pending_bytes: 0,
        written: 0,
        dropped: 0,
    }),
};

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        // One write per line so that lines from several processes sharing
        // stderr do not interleave mid-line.
        let line = format!("container-run: {level}{}\n", record.args());
        if let Ok(mut w) = self.writer.lock() {
            w.push(line.into_bytes());
        }
    }

    fn flush(&self) {
        flush_pending();
    }
}

/// What one attempt to write did.
enum Wrote {
    All,
    Some(usize),
    WouldBlock,
    /// stderr is closed or broken: nothing will ever be read.
    Failed,
}

impl Writer {
    fn push(&mut self, line: Vec<u8>) {
        self.drain();
        if self.pending.is_empty() {
            match self.write(&line) {
                Wrote::All | Wrote::Failed => return,
                Wrote::Some(n) => self.written = n,
                Wrote::WouldBlock => {}
            }
        }
        if self.pending_bytes + line.len() > MAX_PENDING_BYTES && !self.pending.is_empty() {
            self.dropped += 1;
            return;
        }
        self.pending_bytes += line.len();
        self.pending.push_back(line);
    }

    /// Write what waits, in order, until the reader stalls again; then the
    /// count of dropped lines, once everything before it is out.
    fn drain(&mut self) {
        loop {
            let Some(line) = self.pending.front() else {
                if self.dropped == 0 {
                    return;
                }
                let note = format!(
                    "container-run: warning: {} log lines dropped: stderr was not being read\n",
                    self.dropped
                );
                self.dropped = 0;
                self.pending_bytes += note.len();
                self.pending.push_back(note.into_bytes());
                continue;
            };
            match self.write(&line[self.written..]) {
                Wrote::All | Wrote::Failed => {
                    let line = self.pending.pop_front().unwrap_or_default();
                    self.pending_bytes -= line.len();
                    self.written = 0;
                }
                Wrote::Some(n) => {
                    self.written += n;
                    return;
                }
                Wrote::WouldBlock => return,
            }
        }
    }

    fn write(&self, bytes: &[u8]) -> Wrote {
        let result = match &self.sink {
            Sink::Blocking => {
                return match io::stderr().lock().write_all(bytes) {
                    Ok(()) => Wrote::All,
                    Err(_) => Wrote::Failed,
                };
            }
            Sink::Pipe(fd) => raw_write(fd.as_raw_fd(), bytes),
            Sink::Socket => {
                // SAFETY: fd 2 is open for the whole life of the process;
                // the buffer is valid for its length.
                let n = unsafe {
                    libc::send(
                        2,
                        bytes.as_ptr().cast(),
                        bytes.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            Sink::PolledPipe => {
                let mut pfd = libc::pollfd {
                    fd: 2,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
                if ready == 1 && pfd.revents & libc::POLLOUT != 0 {
                    // A free pipe slot holds a page: a line up to PIPE_BUF
                    // goes in whole, without blocking.
                    let chunk = &bytes[..bytes.len().min(libc::PIPE_BUF)];
                    raw_write(2, chunk)
                } else if ready == 1 {
                    return Wrote::Failed;
                } else {
                    return Wrote::WouldBlock;
                }
            }
        };
        match result {
            Ok(n) if n == bytes.len() => Wrote::All,
            Ok(n) => Wrote::Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Wrote::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Wrote::Some(0),
            Err(_) => Wrote::Failed,
        }
    }
}

fn raw_write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// How to write stderr without blocking and without touching the flags of
/// the open file description the job shares.
fn sink_for_stderr() -> Sink {
    // SAFETY: fstat on fd 2 into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return Sink::Blocking;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => Sink::Socket,
        libc::S_IFIFO => {
            let path = c"/proc/self/fd/2";
            // SAFETY: a valid C string; the fd returned is owned here.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd that nothing else owns.
                Sink::Pipe(unsafe { OwnedFd::from_raw_fd(fd) })
            } else {
                Sink::PolledPipe
            }
        }
        // Regular files do not stall; a terminal's flow control is the
        // operator's own doing.
        _ => Sink::Blocking,
    }
}

/// Whether lines wait for a stalled stderr reader: the event loop then also
/// waits for stderr to take more (POLLOUT), so they go out as soon as the
/// reader drains, even when nothing else happens.
pub fn pending() -> bool {
    LOGGER.writer.lock().is_ok_and(|w| !w.pending.is_empty())
}

/// Write lines that wait for a stalled stderr reader; the event loop calls
/// this on each turn (see `pending`), so the dropped-lines note appears once
/// the reader drains, without a timer.
pub fn flush_pending() {
    if let Ok(mut w) = LOGGER.writer.lock()
        && !w.pending.is_empty()
    {
        w.drain();
    }
}

pub fn init(debug: bool) {
    if let Ok(mut w) = LOGGER.writer.lock() {
        w.sink = sink_for_stderr();
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

/// Warnings about one recurring thing (a job user renaming over the
/// control socket in a loop) must not flood the container's log: the first
/// goes out, the next ones within `WINDOW` are only counted, and the first
/// one after the window carries the count. No timer: a count is told when
/// the thing happens again, never by waking up for it.
#[derive(Debug, Default)]
pub struct Limited {
    shown_at: Option<std::time::Instant>,
    held: u64,
}

impl Limited {
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    /// `Some(n)` when a line is due now, `n` being how many were held back
    /// since the last one; `None` when this one is only counted.
    pub fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.shown_at {
            Some(at) if now.saturating_duration_since(at) < Self::WINDOW => {
                self.held += 1;
                None
            }
            _ => {
                self.shown_at = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// `text`, with `(and N more like it in the last 10 s)` when some were
    /// held back.
    pub fn text(text: &str, held: u64) -> String {
        if held == 0 {
            text.to_string()
        } else {
            format!("{text} (and {held} more like it since the last such line)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn repeated_warnings_are_counted_not_repeated() {
        let mut l = Limited::default();
        let t = Instant::now();
        assert_eq!(l.due(t), Some(0));
        for i in 1..=1000 {
            assert_eq!(l.due(t + Duration::from_millis(i)), None);
        }
        assert_eq!(
            l.due(t + Limited::WINDOW + Duration::from_secs(1)),
            Some(1000)
        );
        assert_eq!(l.due(t + Limited::WINDOW + Duration::from_secs(2)), None);
        assert_eq!(Limited::text("x", 0), "x");
        assert!(Limited::text("x", 3).contains("3 more"));
    }
}
