//! The files of SPEC section 2 besides the socket: the `.running` sentinel,
//! the pidfile and the STOP marker. Each is written atomically (a temporary
//! file in the same directory, then rename), so a reader never sees a
//! half-written pid.

use std::io::{self, Write};
use std::path::Path;

use crate::paths::Paths;

pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(contents))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Sentinel and pidfile: present exactly while the job runs.
pub fn write_run_files(paths: &Paths, pid: i32) -> io::Result<()> {
    write_atomic(&paths.pidfile, format!("{pid}\n").as_bytes())?;
    write_atomic(&paths.running, b"")
}

pub fn remove_run_files(paths: &Paths) -> io::Result<()> {
    let a = remove(&paths.running);
    let b = remove(&paths.pidfile);
    a.and(b)
}

pub fn hold_in_force(paths: &Paths) -> bool {
    paths.stopped.exists()
}

pub fn write_hold(paths: &Paths) -> io::Result<()> {
    write_atomic(&paths.stopped, b"STOP\n")
}

pub fn remove_hold(paths: &Paths) -> io::Result<()> {
    remove(&paths.stopped)
}

/// Create the directories container-run writes into, and prove they are
/// writable now, before anything is started.
pub fn prepare_dirs(paths: &Paths) -> io::Result<()> {
    for dir in [&paths.data_dir, &paths.pid_dir] {
        std::fs::create_dir_all(dir)?;
        let probe = dir.join(format!(".container-run-probe{}", std::process::id()));
        std::fs::File::create(&probe)?;
        std::fs::remove_file(&probe)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("cr-sf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("sub/x.pid");
        write_atomic(&file, b"1\n").unwrap();
        write_atomic(&file, b"22\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"22\n");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
        remove(&file).unwrap();
        remove(&file).unwrap();
        assert!(!file.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
