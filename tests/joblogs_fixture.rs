//! Fixtures of the `container-run logs` tests: a running logs mode whose
//! stdout and stderr go to files, killed by pid when the test ends, and
//! helpers to append to log files and read the stream back. Included by
//! tests/joblogs.rs and tests/joblogs_attacks.rs (`#[path]`); built alone
//! it holds no test.
#![allow(dead_code)]

#[path = "common/mod.rs"]
pub(crate) mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::*;

pub struct Logs {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
    exited: Option<i32>,
}

impl Logs {
    /// `container-run logs --base-dir BASE ARGS...`, once its first scan
    /// is done (its `streaming` line).
    pub fn start(base: &Path, args: &[&str]) -> Logs {
        let logs = Logs::spawn(base, args);
        logs.wait_err("the logs mode's first scan", |e| e.contains(": streaming "));
        logs
    }

    pub fn spawn(base: &Path, args: &[&str]) -> Logs {
        let t = std::env::temp_dir();
        let tag = format!("crt-joblogs-{}-{}", std::process::id(), next());
        let (out, err) = (t.join(format!("{tag}.out")), t.join(format!("{tag}.err")));
        let child = spawn_to_files(&mut mode_command("logs", base, args), &out, &err);
        Logs {
            child,
            out,
            err,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The lines streamed for `label`, without the `label: ` prefix.
    pub fn records(&self, label: &str) -> Vec<String> {
        let prefix = format!("{label}: ");
        self.stdout()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn wait_records(&self, label: &str, want: &[&str]) {
        wait_until(&format!("{label}: {want:?} streamed"), || {
            self.records(label) == want
        });
    }

    pub fn wait_err(&self, what: &str, cond: impl Fn(&str) -> bool) {
        wait_until(what, || cond(&self.stderr()));
    }

    pub fn try_exit(&mut self) -> Option<i32> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap().map(exit_code);
        }
        self.exited
    }

    pub fn wait_exit(&mut self) -> i32 {
        wait_for("the logs mode exits", || self.try_exit())
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            kill(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

fn next() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `BASE/sys/log`, created.
pub fn log_dir(base: &Path) -> PathBuf {
    let d = base.join("sys/log");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Append as a job's logger does: O_APPEND, one write.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// The rotated files `NAME.N.gz` ... `NAME.1.gz` (oldest first), unpacked,
/// then the live file: every byte the file was ever given, in order.
pub fn whole_history(live: &Path) -> Vec<u8> {
    let dir = live.parent().unwrap();
    let name = live.file_name().unwrap().to_str().unwrap();
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p.file_name()?.to_str()?;
            let k = n
                .strip_prefix(name)?
                .strip_prefix('.')?
                .strip_suffix(".gz")?;
            Some((k.parse().ok()?, p))
        })
        .collect();
    rotated.sort();
    let mut all = Vec::new();
    for (_, p) in rotated.iter().rev() {
        all.extend(gunzip(p));
    }
    all.extend(std::fs::read(live).unwrap());
    all
}

pub fn rotated_count(live: &Path) -> usize {
    let dir = live.parent().unwrap();
    let name = live.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_str().unwrap();
            n.starts_with(name) && n.ends_with(".gz") && !n.starts_with('.')
        })
        .count()
}

/// Every gzip member of the file, through the system's gzip.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip")
        .args(["-dc"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gzip -dc {}: {:?}",
        path.display(),
        out
    );
    out.stdout
}

/// Whether the filesystem holding `dir` removes a file's head in place
/// (FALLOC_FL_COLLAPSE_RANGE): probed on a file of two blocks.
pub fn collapse_supported(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let probe = dir.join(format!(".collapse-probe-{}", std::process::id()));
    let f = std::fs::File::create(&probe).unwrap();
    f.set_len(64 * 1024).unwrap();
    // SAFETY: fallocate on an fd this function owns.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096) };
    let _ = std::fs::remove_file(&probe);
    r == 0
}

/// Line N as the writer writes it: 64 bytes, so that no line straddles a
/// page of the page cache and a reader never sees half of one.
pub fn numbered(n: u64) -> String {
    format!(
        "{n:09} {:.<53}\n",
        "the quick brown fox jumps over the lazy dog"
    )
}

/// A job writing numbered lines at full speed, one write(2) per line on an
/// O_APPEND fd: a thread of the test, joined before the test ends.
pub fn full_speed_writer(path: PathBuf, lines: u64) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut all = Vec::new();
        for n in 0..lines {
            let line = numbered(n);
            f.write_all(line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        all
    })
}
