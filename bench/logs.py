#!/usr/bin/env python3
"""container-run logs against tail -F and logrotate (copytruncate).

Throughput: a file of --lines numbered 64-byte lines is appended with one
`cat` (the writer) to a log file that the streamer already follows; the time
from the writer's start until the streamer's stdout (a pipe, read in large
chunks by `cat`, as a container runtime reads it) has carried every line, and the streamer's CPU time (/proc/PID/schedstat) over that
span. container-run is measured with --no-rotate (the same work as tail -F)
and with rotation at its default 50M (gzip included).

Loss: a writer appends numbered lines, one write(2) per line, in bursts of
100 at --rate lines per second (100,000: a busy router's access log); logrotate with copytruncate is run each time the file passes
--rotate-size until it has rotated --rotations times, and so is
container-run logs with --rotate-size; the rotated files plus the live file
are then read back and the missing numbers counted, per 100 rotations.

Every wait is bounded; runs interleave the tools; medians are printed."""

import argparse
import fcntl
import gzip
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LINE = 64
PIPE_SIZE = int(os.environ.get("PIPE_SIZE", "0"))


def line(n):
    return b"%09d %s\n" % (n, b"the quick brown fox jumps over the lazy dog".ljust(53, b"."))


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def wait(what, cond, timeout):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Reader:
    """The container runtime's end of stdout: `cat` into /dev/null (C, large
    reads, as conmon reads a container's pipe); its bytes read are taken
    from /proc/PID/io, so the harness adds no work on the pipe."""

    def __init__(self):
        self.r, self.w = os.pipe()
        if PIPE_SIZE:
            fcntl.fcntl(self.w, 1031, PIPE_SIZE)  # F_SETPIPE_SZ
        self.proc = subprocess.Popen(["cat"], stdin=self.r, stdout=subprocess.DEVNULL)
        os.close(self.r)

    def count(self):
        with open(f"/proc/{self.proc.pid}/io") as f:
            return int(f.readline().split()[1])  # rchar

    def close(self):
        self.proc.wait(30)


def throughput_run(tool, args, data, nlines, work):
    base = tempfile.mkdtemp(prefix="crt-bench-logs-", dir=work)
    logdir = os.path.join(base, "sys/log/job")
    os.makedirs(logdir)
    live = os.path.join(logdir, "job.log")
    open(live, "w").close()
    reader = Reader()
    err = open(os.path.join(base, "err"), "w")
    if tool == "tail -F":
        cmd = ["tail", "-n", "0", "-F", live]
        want = nlines * LINE
    else:
        cmd = [args.bin, "logs", "--base-dir", base] + (["--no-rotate"] if tool.endswith("no-rotate") else [])
        want = nlines * (LINE + len("job/job.log: "))
    proc = subprocess.Popen(cmd, stdout=reader.w, stderr=err, stdin=subprocess.DEVNULL)
    os.close(reader.w)
    try:
        if tool == "tail -F":
            time.sleep(0.5)  # tail has no readiness signal; it idles meanwhile
        else:
            wait("the streaming line", lambda: "streaming" in open(err.name).read(), 20)
        want += reader.count()  # what cat read before: its libraries
        c0 = cpu_ns(proc.pid)
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", 'cat "$1" >> "$2"', "sh", data, live], check=True)
        wait(f"{tool} output", lambda: reader.count() >= want, 600)
        t1 = time.monotonic()
        c1 = cpu_ns(proc.pid)
        if reader.count() != want:
            raise RuntimeError(f"{tool}: {reader.count()} bytes out, {want} expected")
    finally:
        stop(proc)
        reader.close()
        shutil.rmtree(base)
    mb = nlines * LINE / 1e6
    return {"lines/s": nlines / (t1 - t0), "MB/s": mb / (t1 - t0), "CPU ms/MB": (c1 - c0) / 1e6 / mb}


WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
pad = b"the quick brown fox jumps over the lazy dog".ljust(53, b".")
stop, rate = sys.argv[2], int(sys.argv[3])
n, start = 0, time.monotonic()
while not os.path.exists(stop) and n < 50_000_000:
    for _ in range(100):
        os.write(fd, b"%09d %s\n" % (n, pad))
        n += 1
    ahead = n / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(n)
"""


def history(live):
    d, name = os.path.split(live)
    rotated = []
    for f in os.listdir(d):
        rest = f[len(name) + 1:] if f.startswith(name + ".") else ""
        k = rest.split(".")[0]
        if k.isdigit():
            rotated.append((int(k), os.path.join(d, f)))
    data = b""
    for _, p in sorted(rotated, reverse=True):
        with open(p, "rb") as f:
            raw = f.read()
        data += gzip.decompress(raw) if p.endswith(".gz") else raw
    with open(live, "rb") as f:
        data += f.read()
    return data


def count_lost(data, written):
    seen = set()
    doubled = 0
    for l in data.split(b"\n"):
        if len(l) == LINE - 1 and l[:9].isdigit():
            n = int(l[:9])
            doubled += n in seen
            seen.add(n)
    return written - len(seen), doubled


def loss_run(tool, args, fs_dir):
    base = tempfile.mkdtemp(prefix="crt-bench-logs-", dir=fs_dir)
    logdir = os.path.join(base, "sys/log/job")
    os.makedirs(logdir)
    live = os.path.join(logdir, "job.log")
    open(live, "w").close()
    stopfile = os.path.join(base, "stop")
    rot = args.rotate_size
    proc = None
    try:
        if tool == "container-run logs":
            err = os.path.join(base, "err")
            proc = subprocess.Popen(
                [args.bin, "logs", "--base-dir", base, "--rotate-size", str(rot), "--keep", "1000"],
                stdout=subprocess.DEVNULL, stderr=open(err, "w"), stdin=subprocess.DEVNULL)
            wait("the streaming line", lambda: "streaming" in open(err).read(), 20)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, live, stopfile, str(args.rate)],
                                  stdout=subprocess.PIPE)
        rotations = 0
        if tool == "container-run logs":
            wait("rotations", lambda: open(err).read().count("rotated ") >= args.rotations, 600)
        else:
            conf = os.path.join(base, "logrotate.conf")
            with open(conf, "w") as f:
                f.write(f"{live} {{\n  copytruncate\n  rotate 100000\n  size {rot}\n  compress\n  missingok\n}}\n")
            state = os.path.join(base, "state")
            for _ in range(args.rotations):
                wait("the file to grow", lambda: size(live) > rot, 60)
                subprocess.run(["logrotate", "-s", state, conf], check=True)
        open(stopfile, "w").close()
        written = int(writer.communicate(timeout=60)[0])
        if proc:
            # SIGTERM: no rotation is left half done when it has exited.
            stop(proc)
            rotations = open(err).read().count("rotated ")
            not_lossless = open(err).read().count("NOT LOSSLESS")
        else:
            rotations = args.rotations
            not_lossless = rotations
        lost, doubled = count_lost(history(live), written)
    finally:
        if proc:
            stop(proc)
        shutil.rmtree(base)
    return {"written": written, "rotations": rotations, "lost": lost, "doubled": doubled,
            "lost/100": lost * 100 / rotations, "not lossless": not_lossless}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--rotations", type=int, default=100)
    ap.add_argument("--rotate-size", type=int, default=1 << 20)
    ap.add_argument("--rate", type=int, default=100_000, help="lines per second the loss writer aims at")
    ap.add_argument("--only", choices=["streaming", "rotation"], help="one of the two parts")
    args = ap.parse_args()
    # SIGTERM unwinds, so that every temporary directory is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.only != "rotation":
        streaming(args)
    if args.only != "streaming":
        rotation(args)


def streaming(args):
    work = tempfile.mkdtemp(prefix="crt-bench-logs-", dir="/tmp")
    try:
        data = os.path.join(work, "lines")
        with open(data, "wb") as f:
            for n in range(args.lines):
                f.write(line(n))
        tools = ["container-run logs --no-rotate", "tail -F", "container-run logs"]
        res = {t: [] for t in tools}
        for r in range(args.runs):
            for t in tools[r % len(tools):] + tools[:r % len(tools)]:
                res[t].append(throughput_run(t, args, data, args.lines, work))
    finally:
        shutil.rmtree(work)
    print(f"### Streaming: {args.lines:,} lines of {LINE} bytes ({args.lines * LINE / 1e6:.0f} MB), {args.runs} runs, medians\n")
    print("| tool | lines/s | MB/s | CPU ms per MB | throughput / tail -F | CPU per MB / tail -F |")
    print("|---|---|---|---|---|---|")
    tail = res["tail -F"]
    for t in tools:
        print(f"| {t} | {med(res[t], 'lines/s'):,.0f} | {med(res[t], 'MB/s'):.1f} | {med(res[t], 'CPU ms/MB'):.2f} "
              f"| {med(res[t], 'MB/s') / med(tail, 'MB/s'):.2f}x | {med(res[t], 'CPU ms/MB') / med(tail, 'CPU ms/MB'):.2f}x |")
    print()


def rotation(args):
    combos = [("container-run logs", "/tmp"), ("logrotate copytruncate", "/tmp"),
              ("container-run logs", "/dev/shm"), ("logrotate copytruncate", "/dev/shm")]
    loss = {c: [] for c in combos}
    for r in range(args.runs):
        for c in combos[r % 2:] + combos[:r % 2]:
            loss[c].append(loss_run(c[0], args, c[1]))
    fs = {"/tmp": "ext4 (/tmp)", "/dev/shm": "tmpfs (/dev/shm)"}
    print(f"### Rotation under a writer of {args.rate:,} lines/s: {args.rotations} rotations at {args.rotate_size} bytes, {args.runs} runs, medians\n")
    print("| tool | filesystem | lines written | rotations | lines lost per 100 rotations | lost per million written | lines doubled | runs with a loss |")
    print("|---|---|---|---|---|---|---|---|")
    for c in combos:
        rows = loss[c]
        per_million = statistics.median(r["lost"] * 1e6 / r["written"] for r in rows)
        print(f"| {c[0]} | {fs[c[1]]} | {med(rows, 'written'):,.0f} | {med(rows, 'rotations'):.0f} "
              f"| {med(rows, 'lost/100'):,.1f} | {per_million:,.1f} | {max(r['doubled'] for r in rows)} "
              f"| {sum(r['lost'] > 0 for r in rows)}/{len(rows)} |")


if __name__ == "__main__":
    main()
