//! `container-run logs` (SPEC section 11): every job's `*.log` file under
//! BASE/sys/log streamed to stdout as `PATH: LINE` and rotated in place,
//! the pod's log container. One thread, one loop: a `ppoll` over a
//! signalfd and the tree's inotify fd, with a timeout only while an
//! unfinished last line waits for its second or a file has more to read.
//! Keeps: no wake-up and no CPU while nothing is written; SIGTERM/SIGINT
//! end the mode only after what was appended has gone out.
//!
//! `tree` owns the directories and files (`scope` says which and how many), `follow` a file's stream and its
//! line splitter, `rotate` the rotation, `gzip` the compression, `out`
//! stdout, `bpm` bpm's `logs` verb on the same parts.

pub mod bpm;
mod follow;
mod gzip;
mod out;
mod rotate;
mod scope;
mod tree;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

pub use bpm::BpmLogsFlags;
use follow::{FileId, Pumped};
use out::{Out, Style};
use rotate::{Policy, Rotated, Rotator};
use tree::{Limits, Options, Select, Start, Tree};

use crate::error::{Fatal, os_phrase};
use crate::exit;

/// Pieces (64 KiB) one file may stream in one turn before the others get
/// theirs: one writer at full speed cannot starve the rest.
const TURN_READS: usize = 16;

/// What SIGTERM still streams of one file: 1 GiB.
const FINAL_READS: usize = 16 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "logs",
    version = crate::VERSION,
    about = "Stream every job's log files (BASE/sys/log/**/*.log, two levels down) to stdout as PATH: LINE, and rotate them in place without losing a line"
)]
pub struct LogsArgs {
    #[command(flatten)]
    pub base: crate::cli::BaseDir,

    /// Rotate a file once it passes this size: bytes, or with k, M or G
    /// (KiB, MiB, GiB); at least 4k.
    #[arg(
        long = "rotate-size",
        value_name = "SIZE",
        env = "CONTAINER_RUN_ROTATE_SIZE",
        default_value = "50M",
        value_parser = parse_size
    )]
    pub rotate_size: u64,

    /// Rotated files kept of each log file: NAME.1.gz (newest) to NAME.N.gz.
    #[arg(
        long,
        value_name = "N",
        env = "CONTAINER_RUN_ROTATE_KEEP",
        default_value = "7",
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub keep: u32,

    /// Stream the files present at start from their beginning, not their end.
    #[arg(long = "from-start")]
    pub from_start: bool,

    /// Stream only; never rotate.
    #[arg(long = "no-rotate")]
    pub no_rotate: bool,

    /// Debug logging.
    #[arg(long)]
    pub debug: bool,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let args: LogsArgs = crate::cli::parse(args, &crate::cli::mode_bin_name("logs"))?;
    let base = crate::cli::absolute(&args.base.base_dir)?;
    crate::logger::init(args.debug);
    let opts = Options {
        root: PathBuf::from("sys/log"),
        depth: 2,
        select: Select::AllLogs,
        start: if args.from_start {
            Start::Beginning
        } else {
            Start::End
        },
        create: true,
    };
    let mut stream = Stream::open(&base, opts, Style::Records)?;
    stream.rotator = (!args.no_rotate).then(|| {
        Rotator::new(Policy {
            size: args.rotate_size,
            keep: args.keep,
        })
    });
    let (files, dirs) = stream.tree.counts();
    let rotation = match &stream.rotator {
        Some(r) => format!(
            "rotating past {} bytes, keeping {}",
            r.policy.size, r.policy.keep
        ),
        None => "not rotating".into(),
    };
    log::info!(
        "streaming {}: {files} files in {dirs} directories; {rotation}",
        base.join("sys/log").display()
    );
    stream.run()
}

/// Sizes as logrotate and BOSH's `max_log_file_size` write them: `50M`,
/// `512k`, `1G`, or bytes; binary units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], Some(c)),
        _ => (t, None),
    };
    let shift = match unit {
        None => 0,
        Some('k' | 'K') => 10,
        Some('m' | 'M') => 20,
        Some('g' | 'G') => 30,
        Some(_) => return Err(format!("invalid size {text:?} (use e.g. 50M, 512k, 1G)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?} (use e.g. 50M, 512k, 1G)"))?;
    let size = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))?;
    if size < 4096 {
        return Err(format!(
            "size {text:?} is too small (at least 4k, a filesystem block)"
        ));
    }
    Ok(size)
}

/// The loop's state: the tree, stdout, and what ends it.
struct Stream {
    tree: Tree,
    out: Out,
    rotator: Option<Rotator>,
    /// Where a rotation failed: not tried again before the file has grown
    /// by another rotation size.
    failed: HashMap<FileId, u64>,
    signals: SignalFd,
    buf: Vec<u8>,
    follow: bool,
    stopping: bool,
}

impl Stream {
    fn open(base: &Path, opts: Options, style: Style) -> Result<Stream, Fatal> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|e| Fatal::setup("cannot block signals", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Fatal::setup("cannot create a signalfd", e))?;
        let root = base.join(&opts.root);
        let tree = Tree::open(base, opts, Limits::for_this_process())
            .map_err(|e| Fatal::setup(format!("cannot watch {}", root.display()), os_phrase(&e)))?;
        Ok(Stream {
            tree,
            out: Out::new(style),
            rotator: None,
            failed: HashMap::new(),
            signals,
            buf: vec![0; follow::PIECE],
            follow: true,
            stopping: false,
        })
    }

    fn run(mut self) -> Result<u8, Fatal> {
        if !self.follow {
            return Ok(self.finish());
        }
        loop {
            self.turn();
            if !self.out.flush() {
                return Ok(exit::OK);
            }
            if self.stopping {
                return Ok(self.finish());
            }
            self.wait()?;
        }
    }

    /// Stream what inotify marked, and the unfinished lines whose second
    /// is up; then let go of files that left the tree.
    fn turn(&mut self) {
        for id in self.tree.due(Instant::now()) {
            self.pump(id, TURN_READS, true);
        }
        for id in self.tree.take_ready() {
            let reads = self.reads_before_rotation(id);
            self.pump(id, reads, false);
        }
        self.tree.reap(&mut self.out);
    }

    fn pump(&mut self, id: FileId, reads: usize, force: bool) {
        let Some(f) = self.tree.file_mut(id) else {
            return;
        };
        match f.pump(&mut self.buf, &mut self.out, reads, force) {
            Ok(Pumped::More) => self.tree.mark_ready(id),
            Ok(Pumped::Eof) => {}
            Err(e) => log::warn!(
                "cannot read {}: {}",
                String::from_utf8_lossy(&f.label),
                os_phrase(&e)
            ),
        }
        self.maybe_rotate(id);
    }

    /// A turn's reads, fewer when a rotation is near: rotated files come
    /// out near the rotation size, not a turn's worth above it.
    fn reads_before_rotation(&mut self, id: FileId) -> usize {
        let (Some(rotator), Some(f)) = (&self.rotator, self.tree.file_mut(id)) else {
            return TURN_READS;
        };
        let left = rotator.policy.size.saturating_sub(f.pos);
        (left.div_ceil(follow::PIECE as u64) as usize).clamp(1, TURN_READS)
    }

    fn maybe_rotate(&mut self, id: FileId) {
        let Some(rotator) = self.rotator.as_mut() else {
            return;
        };
        let Some((dir, name, f)) = self.tree.with_home(id) else {
            return;
        };
        let retry_at = self
            .failed
            .get(&id)
            .map_or(0, |at| at + rotator.policy.size);
        if !rotator.due(f) || f.pos < retry_at {
            return;
        }
        let label = String::from_utf8_lossy(&f.label).into_owned();
        match rotator.rotate(dir, name, f, &mut self.out) {
            Ok(Some(done)) => {
                self.failed.remove(&id);
                log_rotation(&label, &done, rotator.policy.keep);
            }
            Ok(None) => {}
            Err(e) => {
                self.failed.insert(id, f.pos);
                log::warn!("cannot rotate {label}: {}", os_phrase(&e));
            }
        }
    }

    /// Sleep until a signal, an inotify event, or the next deadline; no
    /// timeout at all when nothing is due.
    fn wait(&mut self) -> Result<(), Fatal> {
        crate::logger::flush_pending();
        let timeout = if self.tree.has_ready() || self.tree.rescan_due() {
            Some(Duration::ZERO)
        } else {
            self.tree
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        // SAFETY: fd 2 stays open for the process's whole life.
        let stderr = unsafe { BorrowedFd::borrow_raw(2) };
        let mut fds = [
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.tree.as_fd(), PollFlags::POLLIN),
            PollFd::new(stderr, PollFlags::POLLOUT),
        ];
        let used = if crate::logger::pending() { 3 } else { 2 };
        match ppoll(&mut fds[..used], timeout.map(TimeSpec::from_duration), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::warn!("ppoll: {}", e.desc()),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (signalled, events) = (ready(&fds[0]), ready(&fds[1]));
        if signalled {
            while let Ok(Some(_)) = self.signals.read_signal() {
                self.stopping = true;
            }
        }
        if events || self.tree.rescan_due() {
            self.tree.read_events().map_err(|e| {
                Fatal::setup("cannot watch the log directory any more", os_phrase(&e))
            })?;
        }
        Ok(())
    }

    /// Everything appended so far goes out, unfinished last lines too.
    fn finish(&mut self) -> u8 {
        for id in self.tree.ids() {
            self.pump(id, FINAL_READS, true);
        }
        self.tree.reap(&mut self.out);
        self.out.flush();
        exit::OK
    }
}

fn log_rotation(label: &str, done: &Rotated, keep: u32) {
    let name = label.rsplit('/').next().unwrap_or(label);
    let how = if done.lossless {
        "; the file goes on in place".to_string()
    } else {
        " by truncating it: NOT LOSSLESS on this filesystem, which cannot remove a file's head in place (tmpfs?): lines appended between the last read and the truncate are lost".to_string()
    };
    log::info!(
        "rotated {label}: {} bytes to {name}.1.gz (keeping {keep}){how}",
        done.bytes
    );
    if let Some(tmp) = &done.kept_at {
        log::warn!(
            "{name}.1.gz could not take its name: those bytes are in {}",
            tmp.to_string_lossy()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Ok(50 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert_eq!(parse_size("4K"), Ok(4096));
        for bad in ["", "M", "5X", "-1M", "1.5M", "100", "4095", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
