//! Rotation (SPEC section 11): the head of a live file into `NAME.1.gz`,
//! the older ones shifted up to `NAME.KEEP.gz`, the live file going on in
//! place (same inode, owner and open fds of its writers). Keeps: on a
//! filesystem that removes a file's head in place (ext4, xfs:
//! FALLOC_FL_COLLAPSE_RANGE) every byte ends in exactly one of the rotated
//! and live files, and the rotated copy is on disk before the head leaves
//! the live file; elsewhere (tmpfs) at most what is appended between the
//! last read and the truncate is lost, never doubled. Nothing is created
//! or written through a name the job user prepared: the rotated file is
//! created O_EXCL|O_NOFOLLOW under a name nobody can predict, given its
//! owner and mode through its fd, and renamed through the directory's fd.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag, fallocate, openat, renameat};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, ftruncate, unlinkat};

use super::follow::{Carry, FileId, Followed, PIECE, read_at};
use super::gzip::Member;
use super::out::Out;

/// Reads of the fallback before it gives up on a writer that never pauses
/// (and rotates later): each one finds what arrived during the last.
const CATCH_UP_READS: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Rotate once this much of a file has been streamed.
    pub size: u64,
    pub keep: u32,
}

/// What one rotation did, for its log line.
#[derive(Debug)]
pub struct Rotated {
    /// Bytes moved into `NAME.1.gz`.
    pub bytes: u64,
    /// false: the filesystem could not remove the head in place and the
    /// file was truncated instead.
    pub lossless: bool,
    /// Set when `NAME.1.gz` could not take its name: where the bytes are.
    pub kept_at: Option<OsString>,
}

/// A live file being cut: its writable fd and where the cut is.
struct Cut<'a> {
    live: File,
    f: &'a mut Followed,
    at: u64,
}

pub struct Rotator {
    pub policy: Policy,
    buf: Vec<u8>,
}

impl Rotator {
    pub fn new(policy: Policy) -> Rotator {
        Rotator {
            policy,
            buf: vec![0; PIECE],
        }
    }

    /// Whether the file has grown past the rotation size (counted in what
    /// was streamed: the stream is never behind a cut).
    pub fn due(&self, f: &Followed) -> bool {
        f.pos >= self.policy.size
    }

    /// Rotate `name` in `dir`, which `f` follows. None: not this time (the
    /// name leads elsewhere now, or nothing block-aligned can be cut yet).
    pub fn rotate(
        &mut self,
        dir: BorrowedFd,
        name: &OsStr,
        f: &mut Followed,
        out: &mut Out,
    ) -> io::Result<Option<Rotated>> {
        let meta = f.file.metadata()?;
        let Some(at) = cut_at(f.pos, meta.len(), meta.blksize()) else {
            return Ok(None);
        };
        let Some(live) = open_live(dir, name, f.id)? else {
            return Ok(None);
        };
        let (tmp_name, tmp) = create_like(dir, name, &meta)?;
        let mut cut = Cut { live, f, at };
        let (bytes, lossless) = match self.fill(&mut cut, tmp, out) {
            Ok(done) => done,
            Err(e) => {
                let _ = unlinkat(dir, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                return Err(e);
            }
        };
        self.shift(dir, name);
        let first = numbered(name, 1);
        let kept_at = match renameat(dir, tmp_name.as_os_str(), dir, first.as_os_str()) {
            Ok(()) => None,
            Err(e) => {
                log::warn!("cannot name {}: {}", first.to_string_lossy(), e.desc());
                Some(tmp_name)
            }
        };
        Ok(Some(Rotated {
            bytes,
            lossless,
            kept_at,
        }))
    }

    /// The head into the new file, then out of the live one: in place when
    /// the filesystem can, else by truncating after a last read.
    fn fill(&mut self, cut: &mut Cut, tmp: File, out: &mut Out) -> io::Result<(u64, bool)> {
        let mut member = Member::new(tmp);
        self.copy(&cut.f.file, 0, cut.at, &mut member)?;
        let tmp = member.finish()?;
        match fallocate(
            cut.live.as_fd(),
            FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
            0,
            cut.at as i64,
        ) {
            Ok(()) => {
                cut.f.shift(cut.at);
                Ok((cut.at, true))
            }
            Err(Errno::EOPNOTSUPP) => Ok((self.catch_up_and_truncate(cut, tmp, out)?, false)),
            Err(e) => Err(e.into()),
        }
    }

    /// The fallback: read on to the end, each chunk into the rotated file
    /// and to stdout, and truncate right after the read that found nothing
    /// more: what a writer appends between that read and the truncate is
    /// lost (the rotation's log line says so). A second gzip member holds
    /// what followed the cut.
    fn catch_up_and_truncate(
        &mut self,
        cut: &mut Cut,
        tmp: File,
        out: &mut Out,
    ) -> io::Result<u64> {
        let mut member = Member::new(tmp);
        self.copy(&cut.f.file, cut.at, cut.f.pos, &mut member)?;
        let (mut at, mut carry) = (cut.f.pos, Carry::default());
        for _ in 0..CATCH_UP_READS {
            let n = read_at(&cut.f.file, &mut self.buf, at)?;
            if n == 0 {
                ftruncate(cut.live.as_fd(), 0)?;
                carry.flush(&cut.f.label, out);
                cut.f.restart();
                member.finish()?;
                return Ok(at);
            }
            member.write(&self.buf[..n])?;
            carry.feed(&cut.f.label, &self.buf[..n], out);
            at += n as u64;
        }
        // Nothing truncated; what went out here is not streamed again.
        cut.f.pos = at - carry.len() as u64;
        Err(io::Error::other(
            "its writer never paused: not rotated this time",
        ))
    }

    fn copy(&mut self, from: &File, start: u64, end: u64, member: &mut Member) -> io::Result<()> {
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(self.buf.len());
            let n = read_at(from, &mut self.buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::other("it shrank while being copied"));
            }
            member.write(&self.buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// `NAME.K.gz` to `NAME.K+1.gz`, oldest first, so the one at KEEP is
    /// replaced. Renames move names only: a planted link is moved, never
    /// followed.
    fn shift(&self, dir: BorrowedFd, name: &OsStr) {
        for k in (1..self.policy.keep).rev() {
            let (from, to) = (numbered(name, k), numbered(name, k + 1));
            match renameat(dir, from.as_os_str(), dir, to.as_os_str()) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => log::warn!(
                    "cannot rename {} to {}: {}",
                    from.to_string_lossy(),
                    to.to_string_lossy(),
                    e.desc()
                ),
            }
        }
    }
}

/// `NAME.K.gz`
pub fn numbered(name: &OsStr, k: u32) -> OsString {
    let mut s = name.to_os_string();
    s.push(format!(".{k}.gz"));
    s
}

/// The cut: block-aligned (what COLLAPSE_RANGE takes), within what was
/// streamed, short of the end (the live file keeps at least a byte).
fn cut_at(streamed: u64, len: u64, blksize: u64) -> Option<u64> {
    let blk = blksize.max(512);
    let mut cut = streamed.min(len) / blk * blk;
    if cut >= len {
        cut = cut.saturating_sub(blk);
    }
    (cut > 0).then_some(cut)
}

/// The live file opened for writing, if `name` still leads to the file
/// followed: opened without following a link, without blocking on a FIFO,
/// then compared by inode.
fn open_live(dir: BorrowedFd, name: &OsStr, id: FileId) -> io::Result<Option<File>> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let file = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    Ok((meta.file_type().is_file() && FileId::of(&meta) == id).then_some(file))
}

/// A new file beside `name`, with its owner and mode (never wider than
/// 0777), under a name nobody can have prepared.
fn create_like(dir: BorrowedFd, name: &OsStr, live: &Metadata) -> io::Result<(OsString, File)> {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".1.gz.{}", crate::state_files::random_suffix()?));
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, tmp.as_os_str(), flags, Mode::from_bits_truncate(0o600))?;
    let owned = (Uid::from_raw(live.uid()), Gid::from_raw(live.gid()));
    let result = match fchown(fd.as_fd(), Some(owned.0), Some(owned.1)) {
        // Not root: the rotated file stays this process's own.
        Ok(()) | Err(Errno::EPERM) => {
            fchmod(fd.as_fd(), Mode::from_bits_truncate(live.mode() & 0o777))
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e.into());
    }
    Ok((tmp, File::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_block_aligned_and_leave_the_file_something() {
        assert_eq!(cut_at(10_000, 10_000, 4096), Some(8192));
        assert_eq!(cut_at(8192, 8192, 4096), Some(4096));
        assert_eq!(cut_at(8192, 9000, 4096), Some(8192));
        assert_eq!(cut_at(4096, 4096, 4096), None);
        assert_eq!(cut_at(100, 5000, 4096), None);
        assert_eq!(cut_at(9000, 5000, 4096), Some(4096), "never past the end");
        assert_eq!(numbered(OsStr::new("a.log"), 3), "a.log.3.gz");
    }
}
