//! The release binary from `scripts/build-static`: statically linked, and
//! working as PID 1 of an otherwise empty root (no /lib, no /etc, no /dev,
//! no shell), as an image built FROM scratch gives. They are ignored by a
//! plain `cargo test`, with the reason shown in its output; run them with
//! `scripts/build-static && cargo test --test static_binary -- --ignored`,
//! as CI does (where a missing target/static fails them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn static_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/static");
    if dir.join("container-run").exists() && dir.join("testchild").exists() {
        return dir;
    }
    panic!("target/static missing: run scripts/build-static before these tests");
}

/// True when the ELF file has no PT_INTERP program header: no dynamic
/// loader, so no libc needed from the image.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
#[ignore = "needs target/static: scripts/build-static, then cargo test --test static_binary -- --ignored"]
fn the_release_binary_is_static() {
    let dir = static_dir();
    for name in ["container-run", "testchild"] {
        let elf = std::fs::read(dir.join(name)).unwrap();
        assert!(!has_interpreter(&elf), "{name} needs a dynamic loader");
    }
    let out = Command::new("ldd")
        .arg(dir.join("container-run"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "{text}"
    );
    // And a dynamic one is told apart, so the check above can fail.
    assert!(has_interpreter(&std::fs::read(bin()).unwrap()));

    let out = Command::new(dir.join("container-run"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    assert!(version.starts_with(&format!("container-run {}", env!("CARGO_PKG_VERSION"))));
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() {
        assert!(version.contains("(commit "), "{version}");
    }
}

#[test]
#[ignore = "needs target/static: scripts/build-static, then cargo test --test static_binary -- --ignored"]
fn runs_as_pid_1_of_an_empty_root() {
    let dir = static_dir();
    if !require_root("for unshare --root") {
        return;
    }
    let root = TempDir::new();
    for d in ["bin", "proc", "base"] {
        std::fs::create_dir(root.file(d)).unwrap();
    }
    for name in ["container-run", "testchild"] {
        std::fs::copy(dir.join(name), root.file("bin").join(name)).unwrap();
    }
    let mut unshare = namespaced()
        .arg(format!("--root={}", root.path().display()))
        .args([
            "/bin/container-run",
            "--base-dir",
            "/base",
            "--job-name",
            "job",
        ])
        .args(["--", "/bin/testchild", "--ready", "/base/ready"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let outer = unshare.id() as i32;
    let files = Files::new(&root.file("base"), "job", "job");
    let ready = root.file("base/ready");
    wait_until("job ready inside the empty root", || {
        read_pid(&ready) == Some(2)
    });
    let sup = wait_for("container-run", || {
        descendants(outer)
            .into_iter()
            .find(|&p| ppid(p) == Some(outer))
    });

    // Controlled from the host through the socket in the shared directory.
    let s = request(&files.socket, "STOP");
    assert!(s["state"] == "stopping" || s["state"] == "stopped");
    wait_until("stopped", || {
        request(&files.socket, "STATUS")["state"] == "stopped"
    });
    assert!(files.stopped.exists() && !files.pidfile.exists());
    std::fs::remove_file(&ready).unwrap();
    request(&files.socket, "START");
    wait_until("started again", || read_pid(&ready).is_some());
    assert_eq!(request(&files.socket, "STATUS")["starts"], 2);

    kill(sup, libc::SIGTERM);
    let status = wait_for("exit", || unshare.try_wait().unwrap());
    assert_eq!(exit_code(status), 0);
    assert!(!files.socket.exists());
}
