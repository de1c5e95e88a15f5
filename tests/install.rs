//! `container-run install DIR`, the init container's copy step: it creates
//! DIR, and a re-run replaces the file while processes execute it (what a
//! plain `cp` fails with: "Text file busy"), leaving those processes alone.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// A container-run started from the installed file, SIGKILLed by pid if the
/// test fails before it ends it.
struct Installed(Child);

impl Drop for Installed {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            kill(self.0.id() as i32, libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

fn install(with: &Path, dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(with);
    cmd.arg("install").arg(dir);
    output_with_deadline(cmd)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The installed binary as a job container runs it, with the test child.
fn run_installed(installed: &Path, base: &Path, ready: &Path) -> Installed {
    Installed(
        Command::new(installed)
            .arg("--base-dir")
            .arg(base)
            .args(["--job-name", "job", "--"])
            .arg(child())
            .arg("--ready")
            .arg(ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Install with the installed binary, then with the original: each time a
/// new inode under the same name, mode 0755, nothing else left in `dir`.
fn reinstall_twice(dir: &Path, installed: &Path, first_inode: u64) {
    let mut inode = first_inode;
    for with in [installed.to_path_buf(), bin()] {
        assert_eq!(install(&with, dir), (0, String::new(), String::new()));
        let now = std::fs::metadata(installed).unwrap();
        assert_ne!(now.ino(), inode, "installed with {}", with.display());
        assert_eq!(now.permissions().mode() & 0o7777, 0o755);
        inode = now.ino();
    }
    assert_eq!(
        std::fs::read(installed).unwrap(),
        std::fs::read(bin()).unwrap()
    );
    assert_eq!(entries(dir), ["container-run"], "no temporary file left");
}

#[test]
fn installs_into_a_new_directory_and_again_while_the_file_runs() {
    let t = TempDir::new();
    let dir = t.file("data/container-run");
    let installed: PathBuf = dir.join("container-run");

    assert_eq!(install(&bin(), &dir), (0, String::new(), String::new()));
    let meta = std::fs::metadata(&installed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(bin()).unwrap()
    );
    assert_eq!(entries(&dir), ["container-run"]);

    // A job container runs the installed file.
    let base = t.file("base");
    let ready = t.file("ready");
    let mut running = run_installed(&installed, &base, &ready);
    let pid = running.0.id() as i32;
    let job = wait_pid_file(&ready);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        installed
    );
    // What `cp` would do, and why it fails on a re-run.
    let busy = std::fs::OpenOptions::new().write(true).open(&installed);
    assert_eq!(
        busy.err().and_then(|e| e.raw_os_error()),
        Some(libc::ETXTBSY)
    );

    // The installed binary installs itself over itself, then the original
    // installs once more: each a new file under the same name.
    reinstall_twice(&dir, &installed, meta.ino());
    // The process that ran the replaced file goes on unaffected: it runs
    // the old inode, still answers, still has its job, and ends cleanly.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.to_string_lossy().ends_with(" (deleted)"), "{exe:?}");
    let files = Files::new(&base, "job", "job");
    let status = request(&files.socket, "STATUS");
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], job);
    kill(pid, libc::SIGTERM);
    let status = wait_for("container-run exits", || running.0.try_wait().unwrap());
    assert_eq!(exit_code(status), 0);
    assert!(!alive(job));
}

#[test]
fn a_symlink_at_the_name_is_replaced_not_followed() {
    let t = TempDir::new();
    let dir = t.file("dir");
    std::fs::create_dir(&dir).unwrap();
    let victim = t.file("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("container-run")).unwrap();

    assert_eq!(install(&bin(), &dir).0, 0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let meta = std::fs::symlink_metadata(dir.join("container-run")).unwrap();
    assert!(meta.file_type().is_file());
}

#[test]
fn bad_input_gets_one_line_and_the_documented_code() {
    let t = TempDir::new();
    let file = t.file("a-file");
    std::fs::write(&file, "").unwrap();

    let (code, out, err) = install(&bin(), &file);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&*file.to_string_lossy()), "{err}");

    // The name is taken by a directory: nothing is renamed over it.
    let dir = t.file("dir");
    std::fs::create_dir_all(dir.join("container-run")).unwrap();
    let (code, _, err) = install(&bin(), &dir);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(entries(&dir), ["container-run"], "temporary file removed");

    for args in [
        &["install"][..],
        &["install", "a", "b"],
        &["install", "--nope"],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| os(a)).collect();
        let (code, _, err) = run_to_end(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
