//! The compression of rotated files: gzip (RFC 1952) through flate2's
//! pure-Rust backend (no C library in the static binary). Keeps: a member
//! is complete once `finish` returns, and its bytes are on disk (synced)
//! before the caller removes them from the live file.

use std::fs::File;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;

/// gzip's level 1. Rotation runs in the one event loop, so its time is
/// time the stream waits; logs are repetitive text, and level 1 keeps most
/// of level 6's ratio at a fraction of its CPU (docs/benchmarks.md).
const LEVEL: u32 = 1;

/// One gzip member being written into a file of container-run's own.
pub struct Member(GzEncoder<File>);

impl Member {
    pub fn new(file: File) -> Member {
        Member(GzEncoder::new(file, Compression::new(LEVEL)))
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    /// The trailer written and synced; the file is handed back so that a
    /// second member can follow (readers such as `zcat` read them all).
    pub fn finish(self) -> io::Result<File> {
        let file = self.0.finish()?;
        file.sync_data()?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn two_members_read_back_as_one_stream() {
        let path = std::env::temp_dir().join(format!("cr-gz-{}", std::process::id()));
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut m = Member::new(file);
        m.write(b"first\n").unwrap();
        let file = m.finish().unwrap();
        let mut m = Member::new(file);
        m.write(b"second\n").unwrap();
        let mut file = m.finish().unwrap();
        file.rewind().unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first\nsecond\n");
        std::fs::remove_file(&path).unwrap();
    }
}
