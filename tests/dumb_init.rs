//! container-run started as `dumb-init -- container-run ...`, as the Quarks
//! operator starts it, in a PID namespace where dumb-init is PID 1 (a
//! container without an engine). dumb-init forwards SIGTERM to container-run's
//! whole process group: a job in that group would get SIGTERM twice per stop
//! (once from dumb-init, once from container-run). The job here counts its
//! SIGTERMs without exiting on them. tests/pod/run.sh does the same in podman.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// Counts SIGTERMs into `signals`, writes its own process group and its
/// parent's into `groups`; never exits by itself.
/// The trap comes first: `groups` is the handshake, and a SIGTERM that came
/// before the trap would end the job uncounted.
const COUNTER: &str = r#"dir=$1
trap 'echo TERM >> "$dir/signals"' TERM
echo "$(cut -d' ' -f5 /proc/$$/stat) $(cut -d' ' -f5 /proc/$PPID/stat)" > "$dir/groups.tmp"
mv "$dir/groups.tmp" "$dir/groups"
while :; do sleep 1 & wait $!; done"#;

/// The unshare process, SIGKILLed (and with it the namespace) if the test
/// fails before it ends.
struct Namespace(Child);

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            kill(self.0.id() as i32, libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

fn dumb_init() -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("dumb-init"))
            .find(|f| f.exists())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "dumb-init is not installed: .ci/run installs it"
        );
        eprintln!("skipped: dumb-init is not installed");
    }
    found.map(|f| f.display().to_string())
}

#[test]
fn one_sigterm_per_stop_under_dumb_init() {
    let Some(dumb_init) = dumb_init() else { return };
    if !require_root("for unshare") {
        return;
    }
    let t = TempDir::new();
    let base = t.file("base");
    let signals = t.file("signals");
    let groups = t.file("groups");
    let mut ns = Namespace(
        namespaced()
            .args([&dumb_init, "--"])
            .arg(bin())
            .arg("--base-dir")
            .arg(&base)
            .args(["--job-name", "counter", "--stop-timeout", "3s", "--"])
            .args(["sh", "-c", COUNTER, "counter"])
            .arg(t.path())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let files = Files::new(&base, "counter", "counter");
    let terms = || {
        lines(&signals)
            .iter()
            .filter(|l| l.as_str() == "TERM")
            .count()
    };

    wait_until("the job has set up", || groups.exists());
    let g = lines(&groups);
    let (job_group, parent_group) = g[0].split_once(' ').unwrap();
    assert_ne!(
        job_group, parent_group,
        "the job is in container-run's process group, which dumb-init signals"
    );

    // A stop through the socket: container-run's SIGTERM only. The job
    // ignores it, so the stop ends with SIGKILL after --stop-timeout.
    let mut stop = Command::new(bin());
    stop.args(["ctl", "stop", "counter", "--base-dir"])
        .arg(&base);
    let (code, _, err) = output_with_deadline(stop);
    assert_eq!(code, 0, "{err}");
    assert_eq!(terms(), 1);
    std::fs::remove_file(&groups).unwrap();
    request(&files.socket, "START");
    wait_until("the job has set up again", || groups.exists());

    // SIGTERM to dumb-init, as the engine sends it to the container's PID 1.
    let outer = ns.0.id() as i32;
    let pid1 = wait_for("dumb-init", || {
        descendants(outer)
            .into_iter()
            .find(|&p| ppid(p) == Some(outer))
    });
    kill(pid1, libc::SIGTERM);
    let status = wait_for("dumb-init exits", || ns.0.try_wait().unwrap());
    assert_eq!(exit_code(status), 0);
    assert_eq!(terms(), 2, "SIGTERMs: {:?}", lines(&signals));
}
