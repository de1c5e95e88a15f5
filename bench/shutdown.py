#!/usr/bin/env python3
"""SIGTERM to the supervisor -> SIGTERM at the job, side by side.

What the drain and the pod-wide barrier (SPEC section 8) cost a pod
deletion: container-run with the barrier off (`--drain-timeout 0`, the
behaviour before drains existed), with the barrier and no peer, with a peer
that has no drain, and with a peer that has a drain configured but not
started (the 2 s settling window applies); an older container-run binary
when one is given (--baseline); tini and dumb-init as the reference of a
plain signal forwarder. Every supervisor runs the same test child
(examples/testchild.rs), which sends `term NS PID` (CLOCK_MONOTONIC) to our
socket when SIGTERM reaches it. Samples are interleaved across the
configurations; medians and p90 are printed. Every loop is bounded.

Run through bench/run-shutdown, which builds the binaries.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from bench import now_ns, wait_until  # the side-by-side bench's clock and bounded waits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CR = os.path.join(ROOT, "target/static/container-run")
CHILD = os.path.join(ROOT, "target/release/examples/testchild")
DEADLINE = 30.0  # seconds any single wait may take


class Listener:
    """The datagrams of the test children: `start NS PID`, `term NS PID`."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait(self, event, timeout=DEADLINE):
        self.sock.settimeout(timeout)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                kind, ns, pid = self.sock.recv(256).decode().split()
            except socket.timeout:
                return None
            if kind == event:
                return int(ns)
        return None


def sample(argv, listener, env):
    """Start argv, wait for the child's start, SIGTERM the supervisor, and
    return the ns until the child got SIGTERM (None if lost)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if listener.wait("start") is None:
            return None
        t0 = now_ns()
        proc.send_signal(signal.SIGTERM)
        t1 = listener.wait("term")
        proc.wait(timeout=DEADLINE)
        return None if t1 is None else t1 - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def idle_rss(binary, listener, env, reps=5):
    """Median VmRSS of an idle container-run supervising the test child."""
    out = []
    for _ in range(reps):
        base = tempfile.mkdtemp(prefix="cr-rss-")
        proc = subprocess.Popen(
            [binary, "--base-dir", base, "--job-name", "job", "--", CHILD],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            if listener.wait("start") is not None:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            out.append(int(line.split()[1]))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=DEADLINE)
            shutil.rmtree(base, ignore_errors=True)
    return statistics.median(out) if out else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--settle-reps", type=int, default=5)
    ap.add_argument("--baseline", help="an older container-run binary to compare with")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="cr-shutdown-")
    listener = Listener(os.path.join(work, "notify"))
    env = dict(os.environ, TESTCHILD_NOTIFY=listener.path)
    env.pop("CONTAINER_RUN_BASE_DIR", None)
    child = [CHILD]
    peers = []

    def cr(binary, base, extra=()):
        return [binary, "--base-dir", base, "--job-name", "job", *extra, "--", *child]

    def peer(base, extra):
        # A neighbour in the same pod: a container-run that runs on.
        os.makedirs(base, exist_ok=True)
        p = subprocess.Popen(
            [CR, "--base-dir", base, "--job-name", "peer", *extra, "--", "sleep", "1000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        peers.append(p)
        sock = os.path.join(base, "data/peer/peer_containerrun.sock")
        wait_until(lambda: os.path.exists(sock))

    bases = {n: os.path.join(work, n) for n in ("off", "alone", "plain", "ready")}
    peer(bases["plain"], [])
    peer(bases["ready"], ["--drain-name", "/bin/true"])
    configs = [
        ("container-run, barrier off (--drain-timeout 0)", cr(CR, bases["off"], ["--drain-timeout", "0"]), args.reps),
        ("container-run, barrier, no peer", cr(CR, bases["alone"]), args.reps),
        ("container-run, barrier, a peer without drain", cr(CR, bases["plain"]), args.reps),
        ("container-run, barrier, a peer with a drain not started", cr(CR, bases["ready"]), args.settle_reps),
    ]
    if args.baseline:
        configs.insert(0, ("container-run before drains (--baseline)", cr(args.baseline, os.path.join(work, "base")), args.reps))
    for tool, argv in (("tini", ["tini", "-s", "--", *child]), ("dumb-init", ["dumb-init", *child])):
        if shutil.which(tool):
            configs.append((tool, argv, args.reps))

    samples = {name: [] for name, _, _ in configs}
    lost = {name: 0 for name, _, _ in configs}
    for i in range(max(r for _, _, r in configs)):
        for name, argv, reps in configs:
            if i < reps:
                ns = sample(argv, listener, env)
                if ns is None:
                    lost[name] += 1
                else:
                    samples[name].append(ns)
    # Measured while the listener's socket still exists.
    binaries = [("container-run", CR)]
    if args.baseline:
        binaries.insert(0, ("container-run before drains", args.baseline))
    footprint = [
        f"| {name} | {os.path.getsize(binary)} | {idle_rss(binary, listener, env)} |"
        for name, binary in binaries
    ]
    for p in peers:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=DEADLINE)
    shutil.rmtree(work, ignore_errors=True)

    print("| binary | size (bytes) | idle RSS (kB), median of 5 |")
    print("|---|---|---|")
    for row in footprint:
        print(row)
    print()
    print("| supervisor | samples | median ms | p90 ms | lost |")
    print("|---|---|---|---|---|")
    for name, _, _ in configs:
        s = sorted(samples[name])
        if not s:
            print(f"| {name} | 0 | - | - | {lost[name]} |")
            continue
        p90 = s[min(len(s) - 1, int(len(s) * 0.9))]
        print(f"| {name} | {len(s)} | {statistics.median(s) / 1e6:.3f} | {p90 / 1e6:.3f} | {lost[name]} |")


if __name__ == "__main__":
    main()
