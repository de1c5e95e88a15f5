//! One followed log file: its fd, where its stream stands, and the line
//! splitter. Keeps: every byte before `pos` has gone to stdout once and
//! none after it; nothing of a file is held in memory between turns (an
//! unfinished line stays in the file and is read again), so memory does
//! not grow with line lengths or the number of files.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use super::out::{Out, Style};

/// The longest record: a longer line goes out in pieces of this size.
pub const PIECE: usize = 64 * 1024;

/// A last line without its newline goes out after this long without more.
pub const QUIET: Duration = Duration::from_secs(1);

/// What a file is, whatever its names: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Whether a pump reached the end of what the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    Eof,
    /// Its budget ran out first: more waits.
    More,
}

pub struct Followed {
    pub file: File,
    pub id: FileId,
    /// The escaped path relative to the watched root: the records' prefix.
    pub label: Vec<u8>,
    /// The first byte not yet streamed.
    pub pos: u64,
    /// How many of the tree's names lead to it; 0: gone, drained at the
    /// end of the turn (a rename within the tree names it again first).
    pub names: u32,
    /// Where an unfinished last line ended when last seen, and since when.
    partial_end: u64,
    quiet_since: Option<Instant>,
}

impl Followed {
    pub fn new(file: File, id: FileId, label: Vec<u8>, pos: u64) -> Followed {
        Followed {
            file,
            id,
            label,
            pos,
            names: 1,
            partial_end: 0,
            quiet_since: None,
        }
    }

    /// When the unfinished last line is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.quiet_since.map(|t| t + QUIET)
    }

    /// Stream what was appended since `pos`, at most `reads` pieces; with
    /// `force`, an unfinished last line goes out too (its time is up, or
    /// the file is leaving the stream).
    pub fn pump(
        &mut self,
        buf: &mut [u8],
        out: &mut Out,
        reads: usize,
        force: bool,
    ) -> io::Result<Pumped> {
        for _ in 0..reads {
            let n = read_at(&self.file, buf, self.pos)?;
            if n == 0 {
                if self.restart_if_truncated()? {
                    continue;
                }
                self.note_partial(0);
                return Ok(Pumped::Eof);
            }
            let at_end = n < buf.len();
            let used = self.emit(&buf[..n], at_end && force, out);
            self.pos += used as u64;
            if at_end {
                self.note_partial((n - used) as u64);
                return Ok(Pumped::Eof);
            }
        }
        Ok(Pumped::More)
    }

    /// Send `data` (read at `pos`) out; how much of it went.
    fn emit(&self, data: &[u8], whole: bool, out: &mut Out) -> usize {
        if let Style::Tail { .. } = out.style() {
            // tail's layout: bytes as they come, unfinished lines included.
            out.raw(&self.label, data);
            return data.len();
        }
        let mut used = out.lines(&self.label, data);
        // A full piece without a newline is a piece of a long line.
        if (used == 0 && data.len() == PIECE) || (whole && used < data.len()) {
            out.record(&self.label, &data[used..]);
            used = data.len();
        }
        used
    }

    fn note_partial(&mut self, len: u64) {
        if len == 0 {
            self.quiet_since = None;
        } else if self.pos + len != self.partial_end || self.quiet_since.is_none() {
            self.quiet_since = Some(Instant::now());
        }
        self.partial_end = self.pos + len;
    }

    /// Someone else truncated the file below what was streamed: follow it
    /// from its new beginning.
    fn restart_if_truncated(&mut self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len >= self.pos {
            return Ok(false);
        }
        log::info!(
            "{} was truncated (to {len} bytes): streaming it from its new beginning",
            String::from_utf8_lossy(&self.label)
        );
        self.restart();
        Ok(true)
    }

    /// From the beginning, as a file truncated or rotated by the fallback.
    pub fn restart(&mut self) {
        self.pos = 0;
        self.partial_end = 0;
        self.quiet_since = None;
    }

    /// The file's first `cut` bytes were removed in place (a rotation).
    pub fn shift(&mut self, cut: u64) {
        self.pos -= cut;
        self.partial_end = self.partial_end.saturating_sub(cut);
    }
}

/// Lines of bytes read in chunks past `pos`, for the rotation's fallback,
/// which must stream what it reads before its truncate removes it: an
/// unfinished line waits here, never more than a piece.
#[derive(Default)]
pub struct Carry(Vec<u8>);

impl Carry {
    pub fn feed(&mut self, label: &[u8], data: &[u8], out: &mut Out) {
        for part in data.split_inclusive(|&b| b == b'\n') {
            self.0.extend_from_slice(part);
            while self.0.len() >= PIECE {
                out.record(label, &self.0[..PIECE]);
                self.0.drain(..PIECE);
            }
            if part.last() == Some(&b'\n') && !self.0.is_empty() {
                out.record(label, &self.0);
                self.0.clear();
            }
        }
    }

    /// Bytes of the unfinished line.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The unfinished line, as a line: its file is about to lose it.
    pub fn flush(&mut self, label: &[u8], out: &mut Out) {
        if !self.0.is_empty() {
            out.record(label, &self.0);
            self.0.clear();
        }
    }
}

/// `pread` that retries an interrupted call.
pub fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Where the last `lines` lines of `file` (of `len` bytes) begin, read
/// backwards a piece at a time (bounded memory, as tail -n): a final
/// newline ends the last line and does not start another.
pub fn last_lines_start(file: &File, len: u64, lines: usize, buf: &mut [u8]) -> io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut seen = 0;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            if b == b'\n' && at + 1 != len {
                seen += 1;
                if seen == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(content: &[u8]) -> (std::path::PathBuf, File) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cr-follow-{}-{n}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        let f = File::open(&p).unwrap();
        (p, f)
    }

    #[test]
    fn last_lines_are_found_backwards() {
        let mut buf = vec![0u8; 4];
        for (content, n, want) in [
            (&b"a\nb\nc\n"[..], 2, 2),
            (b"a\nb\nc\n", 5, 0),
            (b"a\nb\nc", 1, 4),
            (b"a\nb\nc", 0, 5),
            (b"", 3, 0),
            (b"\n\n\n", 1, 2),
        ] {
            let (p, f) = temp(content);
            let got = last_lines_start(&f, content.len() as u64, n, &mut buf).unwrap();
            assert_eq!(got, want, "{content:?} {n}");
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn the_carry_joins_chunks_into_lines_and_pieces() {
        let mut out = Out::held(Style::Records);
        let mut carry = Carry::default();
        carry.feed(b"a", b"one\ntw", &mut out);
        carry.feed(b"a", b"o\nthr", &mut out);
        assert_eq!(carry.len(), 3);
        carry.feed(b"a", &vec![b'z'; PIECE], &mut out);
        assert_eq!(carry.len(), 3, "a piece went out");
        carry.flush(b"a", &mut out);
        assert_eq!(carry.len(), 0);
        let mut want = b"a: one\na: two\na: thr".to_vec();
        want.extend(vec![b'z'; PIECE - 3]);
        want.extend(b"\na: zzz\n");
        assert_eq!(out.pending(), &want[..]);
    }

    #[test]
    fn lines_pieces_and_unfinished_lines() {
        let (p, f) = temp(b"");
        let mut w = File::options().append(true).open(&p).unwrap();
        let id = FileId::of(&f.metadata().unwrap());
        let mut fol = Followed::new(f, id, b"x.log".to_vec(), 0);
        let mut buf = vec![0u8; PIECE];
        let mut out = Out::held(Style::Records);
        w.write_all(b"one\ntw").unwrap();
        assert_eq!(fol.pump(&mut buf, &mut out, 8, false).unwrap(), Pumped::Eof);
        assert_eq!(fol.pos, 4);
        assert!(fol.deadline().is_some());
        w.write_all(b"o\n").unwrap();
        fol.pump(&mut buf, &mut out, 8, false).unwrap();
        assert_eq!((fol.pos, fol.deadline()), (8, None));
        w.write_all(&vec![b'z'; PIECE + 10]).unwrap();
        fol.pump(&mut buf, &mut out, 8, false).unwrap();
        assert_eq!(fol.pos, 8 + PIECE as u64, "one piece out, the rest waits");
        fol.pump(&mut buf, &mut out, 8, true).unwrap();
        assert_eq!(fol.pos, 8 + PIECE as u64 + 10);
        std::fs::remove_file(p).unwrap();
    }
}
