#!/usr/bin/env python3
"""Stop and start latency of container-run binaries against the floor alone:
no peer between two samples, so each process stays warm (the full run of
bench/bench.py interleaves every peer). Same driver, same child, same
interleaving as bench/bench.py; every wait bounded.

    bench/run --reps 20            # builds the binaries, the floor included
    python3 bench/focus.py --reps 300 [OTHER_BINARY...]

Prints each binary's stop and start medians and their ratio to the floor's.
"""

import argparse
import os
import shutil
import statistics
import tempfile

import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("binaries", nargs="*", help="other container-run binaries, side by side")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cr-focus-")
    tools = []
    try:
        tools.append(bench.ContainerRun(work))
        for i, b in enumerate(args.binaries):
            tools.append(bench.ContainerRun(work, b, f"{os.path.basename(b)} ({i + 1})"))
        tools.append(bench.Floor(work))
        stop, start, lost = bench.latency(tools, args.reps)
        floor_stop = statistics.median(stop["floor"])
        floor_start = statistics.median(start["floor"])
        print("| binary | stop median ms | stop / floor | start median ms | start / floor | lost |")
        print("|---|---|---|---|---|---|")
        for t in tools:
            s, u = statistics.median(stop[t.name]), statistics.median(start[t.name])
            print(f"| {t.name} | {s / 1e6:.3f} | {s / floor_stop:.2f}x | "
                  f"{u / 1e6:.3f} | {u / floor_start:.2f}x | {lost[t.name]} |")
    finally:
        for t in tools:
            t.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
