//! `container-run install DIR`: the init container's copy step. It puts the
//! running binary at `DIR/container-run` by writing a file under a name no
//! one can predict and renaming it into place, so it works on a first start
//! (DIR is created) and on every re-run while job containers execute the
//! installed file: the old inode stays with the processes that run it, no
//! "Text file busy", and a reader never sees a half-written binary.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use crate::client::{help_word_to_flag, parse};
use crate::error::Fatal;

/// The name of the installed binary inside DIR.
pub const NAME: &str = "container-run";

#[derive(Debug, Parser)]
#[command(
    name = "container-run install",
    version = crate::VERSION,
    about = "Copy this binary to DIR/container-run (temporary file, then rename), creating DIR",
    after_help = "Safe to re-run while the installed binary is executing: the new file \
                  replaces the name, processes keep the old file.\n\
                  Exit codes: 0 installed; 1 DIR or the file could not be written; 2 usage error."
)]
pub struct InstallArgs {
    /// The directory, usually a volume every job container mounts.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let args: InstallArgs = parse(help_word_to_flag(args), "container-run install")?;
    install(&args.dir)?;
    Ok(crate::exit::OK)
}

/// Install the running executable as `dir/container-run`.
pub fn install(dir: &Path) -> Result<(), Fatal> {
    let shown = dir.join(NAME);
    let fail = |e: &dyn std::fmt::Display| Fatal::setup(shown.display(), e);
    // /proc/self/exe is the file this process runs, even if its name has
    // been replaced since (a re-run installing from an installed copy).
    let mut source = File::open("/proc/self/exe").map_err(|e| fail(&e))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Fatal::setup(dir.display(), e))?;
    // Resolved once: every later step is relative to this descriptor.
    let dir_fd: OwnedFd = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Fatal::setup(dir.display(), e))?;
    let tmp = temporary_name().map_err(|e| fail(&e))?;
    let written = openat(
        &dir_fd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(File::from)
    .and_then(|mut out| {
        std::io::copy(&mut source, &mut out).map_err(io_errno)?;
        // Through the descriptor, and after the umask had its say.
        fchmod(out.as_fd(), Mode::from_bits_truncate(0o755))?;
        fsync(out.as_fd())?;
        // Closed before it gets its name: an exec of a file that some
        // process still has open for writing fails with "Text file busy",
        // and job containers may exec the name the moment it appears.
        drop(out);
        renameat(&dir_fd, tmp.as_str(), &dir_fd, NAME)
    });
    if let Err(e) = written {
        let _ = unlinkat(&dir_fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(fail(&e));
    }
    // The rename itself survives a crash of the node only once the
    // directory is on disk; failing that is not worth failing the install.
    let _ = fsync(dir_fd.as_fd());
    Ok(())
}

fn io_errno(e: std::io::Error) -> nix::Error {
    e.raw_os_error()
        .map(nix::Error::from_raw)
        .unwrap_or(nix::Error::EIO)
}

/// `.container-run.` and 16 random hex digits: a name that someone who can
/// write into DIR cannot prepare a symlink for in advance.
fn temporary_name() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!(".{NAME}.{:016x}", u64::from_ne_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_differ_and_stay_hidden() {
        let a = temporary_name().unwrap();
        let b = temporary_name().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(".container-run.") && a.len() == ".container-run.".len() + 16);
    }
}
