//! End to end: who may control a job, where replies go, and what a flood
//! can cost.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::*;

/// `container-run ctl status --socket SOCK` as another user and group.
fn ctl_status_as(uid: u32, gid: u32, socket: &std::path::Path) -> (i32, String, String) {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(bin())
        .args(["ctl", "status", "--json", "--socket"])
        .arg(socket);
    output_with_deadline(cmd)
}

#[test]
fn other_users_cannot_send_and_the_socket_group_can() {
    if !require_root("to act as other users") {
        return;
    }
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let (code, _, err) = ctl_status_as(65534, 65534, &run.files.socket);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let mut nc = Command::new("setpriv");
    nc.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
    ])
    .arg(format!(
        "echo STOP | socat -t 0 - UNIX-SENDTO:{}",
        run.files.socket.display()
    ));
    let (code, _, _) = output_with_deadline(nc);
    assert_ne!(code, 0, "socat as nobody must fail");
    assert_eq!(run.status()["state"], "running", "nothing got through");

    let t2 = TempDir::new();
    let grouped = Run::builder(t2.path(), "job")
        .args(["--socket-group", "65534"])
        .spawn([child()]);
    grouped.wait_running();
    let meta = std::fs::metadata(&grouped.files.socket).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (65534, 0o660));
    let (code, out, err) = ctl_status_as(65533, 65534, &grouped.files.socket);
    assert_eq!(code, 0, "a member of the socket's group may: {err}");
    assert!(out.contains("\"state\":\"running\""));
    let (code, _, _) = ctl_status_as(65533, 65533, &grouped.files.socket);
    assert_eq!(code, 1, "others may not");
}

#[test]
fn replies_go_only_to_their_sender() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let a = client(&run.files.socket);
    let b = client(&run.files.socket);
    command_until(&a, "STOP", "stopped");
    // Had B been sent A's replies, its first datagram would be one of them
    // ("stopping"); it must be the answer to its own STATUS.
    b.send(b"STATUS").unwrap();
    let first = recv_json(&b);
    assert_eq!(first["state"], "stopped");
    assert_eq!(first["hold"], true);
}

#[test]
fn many_senders_during_a_stop_cannot_grow_memory() {
    let t = TempDir::new();
    let (run, pid) = Run::stubborn(&t, "1h");
    request(&run.files.socket, "TERM");
    let before = rss_kb(run.pid());
    // Each sender asks for a change while the stop lasts, so each would be
    // a waiter: 5,000 of them, from distinct addresses.
    for round in 0..5 {
        let senders: Vec<UnixDatagram> = (0..1000).map(|_| client(&run.files.socket)).collect();
        for (i, s) in senders.iter().enumerate() {
            let cmd = if (i + round) % 2 == 0 {
                "START"
            } else {
                "TERM"
            };
            s.send(cmd.as_bytes()).unwrap();
            // Read at once: replies wait in container-run's send buffer
            // until read, and a full buffer drops them (never blocks).
            assert_eq!(recv_json(s)["state"], "stopping");
        }
    }
    let after = rss_kb(run.pid());
    assert!(
        after <= before + 512,
        "RSS grew from {before} kB to {after} kB"
    );
    kill(pid, libc::SIGKILL);
    run.wait_state("stopped");
}
