//! The README's quick start, as a user who followed it runs it: the demo
//! job with the installed `container-run` (the first command, minus
//! `cargo run --release --`), then every command of the block that drives
//! it, each exiting 0, and the demo left running with no hold.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const DEMO_BASE: &str = "/tmp/container-run-demo";

/// The demo job, killed by pid if the test ends first.
struct Demo(std::process::Child);

impl Demo {
    fn spawn(args: &str, path: &str) -> Demo {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec container-run {args}"))
            .env("PATH", path)
            .env_remove("CONTAINER_RUN_BASE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Demo(child)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            kill(self.0.id() as i32, libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_quick_start_runs_as_written_and_leaves_no_hold() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // Comments kept: they are shell comments.
    let blocks = sh_blocks(&readme, true);
    let demo = blocks[0][0]
        .strip_prefix("cargo run --release -- ")
        .expect("the README starts with the demo command");
    assert_eq!(blocks[1], ["cargo test"], "then the test command");
    let steps = blocks
        .iter()
        .find(|b| b.iter().any(|l| l.contains("ctl status demo")))
        .expect("the block that drives the demo");

    let t = TempDir::new();
    let base = t.file("demo");
    let path = path_with_container_run(&t);
    let local = |line: &str| line.replace(DEMO_BASE, &base.display().to_string());

    // The demo's arguments, through the shell that would parse them.
    let mut demo_cmd = Demo::spawn(&local(demo), &path);
    let files = Files::new(&base, "demo", "demo");
    wait_until("demo running", || files.pidfile.exists());

    for line in steps {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(local(line))
            .env("PATH", &path)
            .env_remove("CONTAINER_RUN_BASE_DIR");
        let (code, out, err) = output_with_deadline(cmd);
        assert_eq!(code, 0, "README: {line}\nstdout: {out}\nstderr: {err}");
    }
    let s = wait_for("the last START carried out", || {
        let s = try_request(&files.socket, "STATUS")?;
        (s["state"] == "running").then_some(s)
    });
    assert_eq!(s["hold"], false, "the quick start leaves no hold behind");
    assert!(!files.stopped.exists());

    // Ctrl-C, as the README says: the job stops and container-run exits 0.
    kill(demo_cmd.0.id() as i32, libc::SIGINT);
    let status = wait_for("demo exits", || demo_cmd.0.try_wait().unwrap());
    assert_eq!(exit_code(status), 0);
}
