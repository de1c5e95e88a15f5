//! `container-run install DIR`: the init container's copy step. It puts the
//! running binary at `DIR/container-run` by writing a file under a name no
//! one can predict and renaming it into place, so it works on a first start
//! (DIR is created) and on every re-run while job containers execute the
//! installed file: the old inode stays with the processes that run it, no
//! "Text file busy", and a reader never sees a half-written binary.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::fsync;

use crate::cli::{help_word_to_flag, parse};
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
    // Resolved once, never through a link at DIR (a link planted there
    // would have root write wherever it points): every later step is
    // relative to this descriptor, and the file inside is created under an
    // unpredictable name and renamed over whatever sits at its name.
    let dir_fd: OwnedFd = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => Fatal::Setup(format!(
            "{}: not a directory (a symbolic link?): not following it",
            dir.display()
        )),
        e => Fatal::setup(dir.display(), e),
    })?;
    // A hidden temporary under an unpredictable name, renamed into place
    // once written, synced and closed.
    crate::state_files::write_with(dir_fd.as_fd(), OsStr::new(NAME), 0o755, |out| {
        std::io::copy(&mut source, out)?;
        out.sync_all()
    })
    .map_err(|e| fail(&e))?;
    // The rename itself survives a crash of the node only once the
    // directory is on disk; failing that is not worth failing the install.
    let _ = fsync(dir_fd.as_fd());
    Ok(())
}
