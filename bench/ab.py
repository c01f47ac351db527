#!/usr/bin/env python3
"""A/B two builds of the balancer side by side, for the cost of a change.

Starts three demo backends (release build; --kind node: three node-mname
processes, tests/interop/backend.js) and two balancers in front of the
same backend sockets: A (default target/release/mname-balancer) on port
15410 and B (--b BIN, an earlier build) on 15411.  Then, in interleaved
rounds (A B A B ...), runs three dnsperf processes (-a 127.0.0.11..13, -q 64
-c 2, or paced with --rate) against each for --seconds, and reads the
balancer's CPU time (every thread's /proc schedstat, in nanoseconds) and
context switches (voluntary and not, from /proc status).  With --syscalls,
`perf stat` also counts its system calls (a tracepoint on every call, which
itself costs CPU: the CPU figures of such a run are inflated).  Prints per
round and the medians: queries/s, average latency (dnsperf's), CPU
us/query, context switches/query (voluntary + involuntary) and, with
--syscalls, syscalls/query; with --latency, the p99 latency of every
answer of the round (dnsperf -v).  Everything runs on loopback; processes
are stopped by PID.

    python3 bench/ab.py --b /path/to/old/mname-balancer [--rounds 3] [--seconds 5] [--rate QPS] [--tcp] [--syscalls] [--latency] [--kind node]
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from common import proc_counts, wait_for  # noqa: E402
BACKEND = REPO / "target" / "release" / "mname-demo-backend"
NODE_BACKEND = REPO / "tests" / "interop" / "backend.js"
CLIENTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def perf_counts(path):
    text = Path(path).read_text()
    out = {}
    for key, pat in [("syscalls", r"([\d,]+)\s+raw_syscalls:sys_enter"),
                     ("cs", r"([\d,]+)\s+context-switches"),
                     ("ms", r"([\d,.]+)\s+msec task-clock")]:
        m = re.search(pat, text)
        out[key] = float(m.group(1).replace(",", "")) if m else float("nan")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=Path, default=REPO / "target" / "release" / "mname-balancer")
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rate", type=int, help="dnsperf -Q per process (paced load)")
    ap.add_argument("--tcp", action="store_true")
    ap.add_argument("--latency", action="store_true",
                    help="dnsperf -v: report each round's p99 latency over every query (paced loads)")
    ap.add_argument("--kind", choices=["demo", "node"], default="demo",
                    help="backends: mname-demo-backend (default) or node-mname (tests/interop/backend.js)")
    ap.add_argument("--syscalls", action="store_true",
                    help="count system calls with perf stat (inflates the CPU figures)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ab-"))
    (tmp / "s").mkdir()
    qfile = tmp / "queries"
    qfile.write_text("www.example.com A\na1.example.com A\nwhoami.example.com TXT\n")
    procs = []

    def start(argv, log):
        p = subprocess.Popen([str(a) for a in argv], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        for i in range(3):
            sock = tmp / "s" / str(5300 + i)
            if args.kind == "demo":
                start([BACKEND, "-s", sock, "-n", f"b{i}"], tmp / f"b{i}.log")
            else:
                start(["node", NODE_BACKEND, "--socket", sock, "--name", f"b{i}"], tmp / f"b{i}.log")
        wait_for(lambda: all(b"backend ready" in (tmp / f"b{i}.log").read_bytes() for i in range(3)),
                 "backends")
        targets = {}
        for name, binary, port in [("A", args.a, 15410), ("B", args.b, 15411)]:
            p = start([binary, "-b", "127.0.0.1", "-p", port, "-s", tmp / "s", "-l", "warn"],
                      tmp / f"{name}.log")
            targets[name] = (p, port)
        time.sleep(1.0)
        for p in procs:
            if p.poll() is not None:
                sys.exit(f"ab.py: a process exited: {p.args}")
        results = {"A": [], "B": []}
        for r in range(1, args.rounds + 1):
            for name, (p, port) in targets.items():
                perf_out = tmp / f"perf.{name}.{r}"
                perf = None
                if args.syscalls:
                    perf = subprocess.Popen(["perf", "stat", "-e", "raw_syscalls:sys_enter",
                                             "-p", str(p.pid), "-o", str(perf_out), "--",
                                             "sleep", str(args.seconds)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                before = proc_counts(p.pid)
                dps = []
                for c in CLIENTS:
                    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-a", c,
                            "-l", str(args.seconds), "-q", "64", "-c", "2", "-t", "2"]
                    if args.rate:
                        argv += ["-Q", str(args.rate)]
                    if args.tcp:
                        argv += ["-m", "tcp"]
                    if args.latency:
                        argv += ["-v"]
                    # Into a file, not a pipe: with -v a client whose pipe
                    # filled while another was read would stop sending.
                    outfile = tmp / f"dnsperf.{name}.{r}.{c}"
                    dps.append((subprocess.Popen(argv, stdout=open(outfile, "w"), stderr=subprocess.STDOUT),
                                outfile))
                done = 0
                lat = []
                each = []
                for d, outfile in dps:
                    d.wait(timeout=args.seconds + 30)
                    out = outfile.read_text(errors="replace")
                    # dnsperf -v: "> NOERROR name type latency" per answer.
                    each += [float(line.split()[-1]) * 1e6 for line in out.splitlines()
                             if line.startswith("> ") and re.match(r"[\d.]+$", line.split()[-1])]
                    m = re.search(r"Queries completed:\s+(\d+)", out)
                    done += int(m.group(1)) if m else 0
                    m = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
                    if m:
                        lat.append(float(m.group(1)) * 1e6)
                after = proc_counts(p.pid)
                syscalls = float("nan")
                if perf:
                    perf.wait(timeout=30)
                    syscalls = perf_counts(perf_out)["syscalls"]
                n = max(done, 1)
                each.sort()
                p99 = each[min(len(each) - 1, int(len(each) * 0.99))] if each else float("nan")
                row = {"qps": done / args.seconds, "lat_us": statistics.mean(lat) if lat else float("nan"),
                       "p99_us": p99,
                       "us_q": (after[0] - before[0]) / 1000 / n,
                       "sys_q": syscalls / n,
                       "vcs_q": (after[1] - before[1]) / n, "ics_q": (after[2] - before[2]) / n}
                results[name].append(row)
                print(f"round {r} {name}: {row['qps']:>9,.0f} q/s  lat {row['lat_us']:.0f} us  "
                      f"p99 {row['p99_us']:.0f} us  {row['us_q']:.2f} us/q  "
                      f"cs/q {row['vcs_q']:.3f}+{row['ics_q']:.3f}  {row['sys_q']:.3f} syscalls/q", flush=True)
                time.sleep(0.5)
        print("medians:")
        for name in results:
            med = {k: statistics.median(x[k] for x in results[name]) for k in results[name][0]}
            print(f"  {name} ({'a' if name == 'A' else 'b'}): {med['qps']:>9,.0f} q/s  lat {med['lat_us']:.0f} us  "
                  f"p99 {med['p99_us']:.0f} us  "
                  f"{med['us_q']:.2f} us/q  cs/q {med['vcs_q']:.3f}+{med['ics_q']:.3f}  "
                  f"{med['sys_q']:.3f} syscalls/q")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
