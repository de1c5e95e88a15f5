#!/usr/bin/env python3
"""container-run side by side with runit, s6, supervisord, tini and dumb-init,
and with the floor (bench/floor.c: recv, kill, reap and nothing else).

Every supervisor runs in its own `unshare --pid --mount --fork --mount-proc`
namespace and supervises the same child (examples/testchild.rs), which sends
a datagram `start NS PID` when it starts and `term NS PID` when SIGTERM
reaches it, NS being CLOCK_MONOTONIC nanoseconds: the same clock this driver
reads before it sends a command. Latency samples are interleaved across the
tools (A B C ... A B C ...), so machine noise hits all alike. Every loop is
bounded in count and time. Prints one markdown table per metric.

Run through bench/run, which installs the peers and builds the binaries.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipping artifact: the static binary of scripts/build-static.
CR = os.path.join(ROOT, "target/static/container-run")
CHILD = os.path.join(ROOT, "target/release/examples/testchild")
CHILD_REAL = os.path.realpath(CHILD)
# bench/floor.c, built by bench/run.
FLOOR = os.path.join(ROOT, "target/bench/floor")
UNSHARE = ["unshare", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child"]
DEADLINE = 30.0  # seconds any single wait may take before it counts as lost


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def wait_until(cond, timeout=DEADLINE, poll=0.0005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return cond()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read(f"/proc/{name}/stat")
            if stat and int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                out.append(int(name))
    return out


def descendants(pid):
    out, frontier = [], [pid]
    while frontier:
        kids = children(frontier.pop())
        out += kids
        frontier += kids
    return out


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


class Notify:
    """The socket the test child reports its start and SIGTERM to."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def drain(self):
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(256)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def wait(self, event, timeout=DEADLINE, not_pid=None):
        """The next `event` datagram: (ns, pid), or None on timeout."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(256).decode().split()
            except socket.timeout:
                return None
            if data[0] == event and int(data[2]) != not_pid:
                return int(data[1]), int(data[2])


class Tool:
    """One supervisor in its own PID namespace, supervising the test child."""

    name = "?"
    controllable = True

    def __init__(self, work):
        self.dir = os.path.join(work, self.name.replace(" ", "-").strip("()"))
        os.makedirs(self.dir)
        self.notify = Notify(os.path.join(self.dir, "n.sock"))
        self.env = dict(os.environ, TESTCHILD_NOTIFY=self.notify.path)

    def launch(self, argv):
        self.proc = subprocess.Popen(
            UNSHARE + argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ok = wait_until(lambda: children(self.proc.pid), 10)
        assert ok, f"{self.name}: supervisor did not start"
        self.pid = children(self.proc.pid)[0]
        started = self.notify.wait("start", 15)
        assert started, f"{self.name}: child did not start"
        self.child = started[1]

    def child_count(self):
        # By executable: runit and s6 run it through a link named `run`.
        return sum(1 for p in descendants(self.pid) if exe(p) == CHILD_REAL)

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class ContainerRun(Tool):
    name = "container-run"

    def __init__(self, work, binary=CR, name=None):
        self.name = name or self.name
        super().__init__(work)
        base = os.path.join(self.dir, "base")
        self.sock_path = os.path.join(base, "data/bench/bench_containerrun.sock")
        self.launch([binary, "--base-dir", base, "--job-name", "bench", "--", CHILD])
        # Connected once, as the FIFO peers' control file is opened once.
        self.tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tx.connect(self.sock_path)
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.bind(b"\0cr-bench-%d-%s" % (os.getpid(), self.name.encode()))
        self.rx.connect(self.sock_path)
        self.rx.settimeout(5)

    def stop(self):
        self.tx.send(b"STOP")

    def start(self):
        self.tx.send(b"START")

    def state(self):
        self.rx.send(b"STATUS")
        return self.rx.recv(4096).split(b'"state":"')[1].split(b'"')[0].decode()

    def is_down(self):
        return self.state() == "stopped"

    def is_up(self):
        return self.state() == "running"

    def junk(self, n, stop_at):
        """n junk datagrams with a STOP at position stop_at; when STOP went."""
        sent = None
        for i in range(n):
            if i == stop_at:
                sent = now_ns()
                self.tx.send(b"STOP\n")
            self.tx.send(b"junk %d \x00\xff" % i)
        return sent


class Floor(ContainerRun):
    """bench/floor.c: the least a supervisor with a datagram control socket
    does (recv, kill, reap), driven exactly as container-run is."""

    name = "floor"

    def __init__(self, work):
        Tool.__init__(self, work)
        self.sock_path = os.path.join(self.dir, "floor.sock")
        self.launch([FLOOR, self.sock_path, CHILD])
        self.tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tx.connect(self.sock_path)
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.bind(b"\0floor-bench-%d" % os.getpid())
        self.rx.connect(self.sock_path)
        self.rx.settimeout(5)


class ServiceDir(Tool):
    """A supervisor of one service directory whose `run` is the child,
    controlled through its command-line tool or by writing the same letters
    straight to its `supervise/control` FIFO (runit and s6 share both)."""

    program = "?"

    def __init__(self, work, fifo):
        self.fifo = fifo
        self.name = f"{self.family} ({'fifo' if fifo else self.cli})"
        super().__init__(work)
        self.svc = os.path.join(self.dir, "bench")
        os.makedirs(self.svc)
        os.symlink(CHILD, os.path.join(self.svc, "run"))
        self.launch([self.program, self.svc])
        self.control = open_fifo(os.path.join(self.svc, "supervise/control"))

    def _cmd(self, letter):
        if self.fifo:
            os.write(self.control, letter.encode())
        else:
            subprocess.run(self.cli_argv(letter), stdout=subprocess.DEVNULL, check=False)

    def stop(self):
        self._cmd("d")

    def start(self):
        self._cmd("u")

    def burst(self, letters):
        os.write(self.control, "".join(letters).encode())


class Runit(ServiceDir):
    family, cli, program = "runit", "sv", "runsv"

    def cli_argv(self, letter):
        return ["sv", letter, self.svc]

    def stat(self):
        return read(os.path.join(self.svc, "supervise/stat")).strip()

    def is_down(self):
        return self.stat() == "down"

    def is_up(self):
        return self.stat() == "run"


class S6(ServiceDir):
    family, cli, program = "s6", "s6-svc", "s6-supervise"

    def cli_argv(self, letter):
        return ["s6-svc", "-" + letter, self.svc]

    def up(self):
        out = subprocess.run(
            ["s6-svstat", "-o", "up", self.svc], capture_output=True, text=True
        )
        return out.stdout.strip()

    def is_down(self):
        return self.up() == "false"

    def is_up(self):
        return self.up() == "true"


class Supervisord(Tool):
    """supervisord; `supervisorctl` for latency, XML-RPC for bursts."""

    name = "supervisord"

    def __init__(self, work, port):
        super().__init__(work)
        self.conf = os.path.join(self.dir, "supervisord.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"""[supervisord]
nodaemon=true
logfile={self.dir}/supervisord.log
pidfile={self.dir}/supervisord.pid
[inet_http_server]
port=127.0.0.1:{port}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=http://127.0.0.1:{port}
[program:bench]
command={CHILD}
autostart=true
autorestart=false
startsecs=0
stopwaitsecs=20
stdout_logfile=NONE
stderr_logfile=NONE
"""
            )
        self.launch(["supervisord", "-n", "-c", self.conf])
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
        assert wait_until(self._answers, 10), "supervisord XML-RPC"

    def _answers(self):
        try:
            self.rpc.supervisor.getState()
            return True
        except (OSError, xmlrpc.client.Error):
            return False

    def _ctl(self, verb):
        subprocess.run(
            ["supervisorctl", "-c", self.conf, verb, "bench"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def stop(self):
        self._ctl("stop")

    def start(self):
        self._ctl("start")

    def burst(self, letters):
        for letter in letters:
            try:
                if letter == "d":
                    self.rpc.supervisor.stopProcess("bench", False)
                else:
                    self.rpc.supervisor.startProcess("bench", False)
            except xmlrpc.client.Fault:
                pass

    def statename(self):
        return self.rpc.supervisor.getProcessInfo("bench")["statename"]

    def is_down(self):
        return self.statename() in ("STOPPED", "EXITED")

    def is_up(self):
        return self.statename() == "RUNNING"


class Init(Tool):
    """tini or dumb-init: an init, no control channel (footprint, idle)."""

    controllable = False

    def __init__(self, work, name, argv):
        self.name = name
        super().__init__(work)
        self.launch(argv + [CHILD])


def open_fifo(path):
    """Open a supervisor's control FIFO for writing, once it has a reader."""
    fd = []

    def attempt():
        try:
            fd.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            return False

    assert wait_until(attempt, 10, 0.005), f"cannot open {path}"
    return fd[0]


def percentile(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt_ms(ns):
    return f"{ns / 1e6:.3f}"


# -- metrics ---------------------------------------------------------------


def latency(tools, reps):
    """Stop: command sent -> child has SIGTERM. Start: command sent -> child
    running. Interleaved: each repetition visits every tool in a rotating
    order."""
    stop = {t.name: [] for t in tools}
    start = {t.name: [] for t in tools}
    lost = {t.name: 0 for t in tools}
    for rep in range(reps):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        for t in order:
            t.notify.drain()
            sent = now_ns()
            t.stop()
            got = t.notify.wait("term")
            if got is None or not wait_until(t.is_down, 10, 0.001):
                lost[t.name] += 1
                continue
            stop[t.name].append(got[0] - sent)
            sent = now_ns()
            t.start()
            got = t.notify.wait("start")
            if got is None:
                lost[t.name] += 1
                wait_until(t.is_up, 10, 0.001)
                continue
            start[t.name].append(got[0] - sent)
            t.child = got[1]
            wait_until(t.is_up, 10, 0.001)
    return stop, start, lost


def cycle(tools, reps):
    """STOP then START sent back to back -> the new child runs."""
    out = {t.name: [] for t in tools}
    lost = {t.name: 0 for t in tools}
    for rep in range(reps):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        for t in order:
            wait_until(t.is_up, 10, 0.001)
            t.notify.drain()
            old = t.child
            sent = now_ns()
            t.stop()
            t.start()
            got = t.notify.wait("start", 5, not_pid=old)
            if got is None:
                lost[t.name] += 1
                t.start()
                wait_until(t.is_up, 10, 0.001)
                continue
            out[t.name].append(got[0] - sent)
            t.child = got[1]
    return out, lost


def proc_numbers(pid):
    status = read(f"/proc/{pid}/status")
    field = lambda k: int(
        next(l.split()[1] for l in status.splitlines() if l.startswith(k + ":"))
    )
    rollup = read(f"/proc/{pid}/smaps_rollup")
    kb = lambda k: int(
        next(l.split()[1] for l in rollup.splitlines() if l.startswith(k + ":"))
    )
    stat = read(f"/proc/{pid}/stat")
    fields = stat[stat.rfind(")") + 2 :].split()
    return {
        "rss": kb("Rss"),
        "pss": kb("Pss"),
        "threads": field("Threads"),
        "ctxt": field("voluntary_ctxt_switches") + field("nonvoluntary_ctxt_switches"),
        "ticks": int(fields[11]) + int(fields[12]),
    }


def idle(tools, seconds):
    """Footprint after 2 s idle; context switches and CPU over `seconds`."""
    time.sleep(2)
    before = {t.name: proc_numbers(t.pid) for t in tools}
    time.sleep(seconds)
    after = {t.name: proc_numbers(t.pid) for t in tools}
    return before, after


def burst_round(t, n, end_with, results):
    """n alternating commands, the last one `end_with`; right if the tool
    settles in that state and stays there."""
    last = "d" if end_with == "stop" else "u"
    first = "u" if last == "d" else "d"
    letters = [first if i % 2 == 0 else last for i in range(n)]
    t.notify.drain()
    if isinstance(t, ContainerRun):  # the floor too: one datagram a command
        for letter in letters:
            (t.stop if letter == "d" else t.start)()
    else:
        t.burst(letters)
    want = t.is_down if last == "d" else t.is_up
    children = 0 if last == "d" else 1

    def settled():
        try:
            return want() and t.child_count() == children
        except (OSError, xmlrpc.client.Error, IndexError):
            return False

    ok = wait_until(settled, 5, 0.002)
    if ok:
        # A late change (a delayed restart, a lost stop) shows within this.
        time.sleep(1.5)
        ok = settled()
    results.append(ok)
    # Leave the tool running for the next round.
    if not ok or last == "d":
        t.start()
        wait_until(lambda: t.is_up() and t.child_count() == 1, 5, 0.002)


def bursts(tools, rounds, n):
    """Tools run their bursts concurrently: this metric counts, it does not
    time."""
    right = {(t.name, e): [] for t in tools for e in ("stop", "start")}
    for _ in range(rounds):
        for end_with in ("stop", "start"):
            threads = [
                threading.Thread(
                    target=burst_round, args=(t, n, end_with, right[(t.name, end_with)])
                )
                for t in tools
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
    return right


def schedstat_ns(pid):
    return int(read(f"/proc/{pid}/schedstat").split()[0])


def flood(cr, rounds, n):
    """n junk datagrams with one STOP in the middle."""
    lat, per_dgram = [], []
    for _ in range(rounds):
        wait_until(cr.is_up, 10, 0.001)
        cr.notify.drain()
        cpu0 = schedstat_ns(cr.pid)
        sent = cr.junk(n, n // 2)
        got = cr.notify.wait("term")
        wait_until(cr.is_down, 10, 0.001)
        cpu1 = schedstat_ns(cr.pid)
        if got:
            lat.append(got[0] - sent)
        per_dgram.append((cpu1 - cpu0) / (n + 1))
        cr.start()
        cr.notify.wait("start")
    return lat, per_dgram


def scale(work, count, rounds, binary=CR):
    """`ctl stop --all` over `count` container-runs sharing one base."""
    base = os.path.join(work, f"scale{count}-{len(binary)}-{os.path.basename(binary)}")
    procs = []
    try:
        for i in range(count):
            procs.append(
                subprocess.Popen(
                    UNSHARE + [binary, "--base-dir", base, "--job-name", f"j{i}", "--", CHILD],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        pidfiles = [os.path.join(base, f"sys/run/bpm/j{i}/j{i}.pid") for i in range(count)]
        assert wait_until(lambda: all(map(os.path.exists, pidfiles)), 60), "scale start"
        times = []
        for _ in range(rounds):
            t0 = time.monotonic_ns()
            r = subprocess.run([binary, "ctl", "stop", "--all", "--base-dir", base], capture_output=True)
            t1 = time.monotonic_ns()
            stopped = not any(map(os.path.exists, pidfiles))
            if r.returncode == 0 and stopped:
                times.append(t1 - t0)
            subprocess.run([binary, "ctl", "start", "--all", "--base-dir", base], capture_output=True)
        return times
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


# -- report ----------------------------------------------------------------


def table(title, header, rows):
    sys.stdout.flush()
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def latency_rows(samples, lost, refs=("container-run", "floor")):
    meds = {r: statistics.median(samples[r]) if samples.get(r) else None for r in refs}
    rows = []
    for name, s in samples.items():
        if not s:
            rows.append([name, "-", "-"] + ["-"] * len(refs) + [len(s), lost[name]])
            continue
        med = statistics.median(s)
        ratios = [f"{med / meds[r]:.2f}x" if meds[r] else "-" for r in refs]
        rows.append([name, fmt_ms(med), fmt_ms(percentile(s, 0.99))] + ratios + [len(s), lost[name]])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--cycle-reps", type=int, default=50)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--burst-rounds", type=int, default=20)
    ap.add_argument("--flood-rounds", type=int, default=5)
    ap.add_argument("--scale-rounds", type=int, default=3)
    ap.add_argument("--scale", default="10,100")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another container-run binary (an earlier commit's) in the same run")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="cr-bench-")
    tools = []
    try:
        cr = ContainerRun(work)
        baseline = [ContainerRun(work, args.baseline, "container-run (baseline)")] if args.baseline else []
        tools = [
            cr,
            *baseline,
            Floor(work),
            Runit(work, fifo=False),
            Runit(work, fifo=True),
            S6(work, fifo=False),
            S6(work, fifo=True),
            Supervisord(work, 19000 + os.getpid() % 1000),
        ]
        inits = [
            Init(work, "tini", ["tini", "--"]),
            Init(work, "dumb-init", ["dumb-init"]),
        ]
        ctl_tools = [t for t in tools if t.controllable]

        print(f"# container-run benchmark, {time.strftime('%Y-%m-%d')}")
        print(f"\n{os.cpu_count()} cores, kernel {os.uname().release}; "
              f"reps {args.reps}, cycle reps {args.cycle_reps}, burst rounds {args.burst_rounds}")

        before, after = idle(tools + inits, args.idle_seconds)
        ref = before["container-run"]
        table(
            "Footprint with one child, after 2 s idle",
            ["tool", "RSS kB", "PSS kB", "threads", "RSS / container-run"],
            [[n, b["rss"], b["pss"], b["threads"], f"{b['rss'] / ref['rss']:.1f}x"] for n, b in before.items()],
        )
        table(
            f"Idle cost over {args.idle_seconds:g} s",
            ["tool", "context switches", "CPU ticks"],
            [[n, after[n]["ctxt"] - b["ctxt"], after[n]["ticks"] - b["ticks"]] for n, b in before.items()],
        )
        for i in inits:
            i.close()

        stop, start, lost = latency(ctl_tools, args.reps)
        head = ["tool", "median ms", "p99 ms", "median / container-run", "median / floor",
                "samples", "lost"]
        table("Stop latency: command sent -> child has SIGTERM", head, latency_rows(stop, lost))
        table("Start latency: command sent -> child running", head, latency_rows(start, lost))
        cyc, cyc_lost = cycle(ctl_tools, args.cycle_reps)
        table("Stop+start cycle: STOP and START back to back -> new child running", head,
              latency_rows(cyc, cyc_lost))

        right = bursts([t for t in ctl_tools if "(sv)" not in t.name and "(s6-svc)" not in t.name],
                       args.burst_rounds, 100)
        rows = []
        for t in ctl_tools:
            if (t.name, "stop") in right:
                rows.append([t.name] + [f"{sum(right[(t.name, e)])}/{len(right[(t.name, e)])}"
                                        for e in ("stop", "start")])
        table("Burst: 100 alternating commands, final state right", ["tool", "ending with stop", "ending with start"], rows)

        rows = []
        for t in [cr, *baseline]:
            lat, per = flood(t, args.flood_rounds, 20000)
            rows.append([t.name, fmt_ms(statistics.median(lat)) if lat else "-",
                         fmt_ms(max(lat)) if lat else "-", f"{statistics.median(per) / 1000:.2f}",
                         len(lat)])
        table("Garbage flood: 20,000 junk datagrams, STOP in the middle",
              ["tool", "STOP latency median ms", "max ms", "CPU per datagram median us", "rounds"],
              rows)
        for t in tools:
            t.close()
        tools = []

        rows = []
        binaries = [("container-run", CR)] + ([("container-run (baseline)", args.baseline)]
                                              if args.baseline else [])
        for count in [int(c) for c in args.scale.split(",") if c]:
            for name, binary in binaries:
                times = scale(work, count, args.scale_rounds, binary)
                rows.append([name, count, fmt_ms(statistics.median(times)) if times else "-",
                             fmt_ms(max(times)) if times else "-", len(times)])
        table("Scale: `ctl stop --all`, until every job has stopped",
              ["tool", "container-runs", "median ms", "max ms", "rounds"], rows)
    finally:
        for t in tools:
            t.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
