#!/usr/bin/env python3
"""A backend that stalls under steady load: the longest any client waits.

Three demo backends behind the balancer serve a steady load (six dnsperf
clients from six addresses at --rate queries/s in all, each with a 1 s
timeout, `-t 1`, and `-v` so every answer's latency is printed).  One
backend (5301, two of the six clients' primary) is stopped with SIGSTOP
and resumed with SIGCONT:

- hang: once, for 20 s (a hung process: only the passive check, the probe
  and the faults they lead to can tell);
- pause: five times, 300 ms each, 5 s apart (a garbage-collection pause of
  a node process: it must fault nothing).

Each scenario runs twice on fresh processes, side by side: with the default
flags (hedging on, `--hedge-after auto`) and with `--hedge-after 0` (as
before hedging).  "Past 1 s" counts queries that got no answer within the
client's 1 s timeout (dnsperf's "lost"); "longest wait" is the largest
latency of any answered query.

    bench/stall.py [--rate 12000] [--seconds 30]

Prints a report and writes bench/results/stall.md.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ROOT, dnsperf, finish, parse_dnsperf, start_backend,  # noqa: E402
                    start_balancer, write_queries)

CLIENTS = [f"127.0.0.{60 + i}" for i in range(6)]
VICTIM = "5301"
COUNTERS = ["udp_forwarded", "hedged", "hedge_wins", "hedge_losers", "hedge_budget_exhausted",
            "hedge_no_target", "replayed", "timeouts", "late_answers", "unsolicited_answers"]


def latencies(out):
    """Every answered query's latency, in seconds, from dnsperf -v."""
    return [float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ (\d+\.\d+)$", out, re.M)]


def percentile(xs, q):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def scenario(kind, hedging, seconds, rate):
    tmp = tempfile.mkdtemp(prefix=f"mnb-stall-{kind}.")
    socks = os.path.join(tmp, "sockets")
    os.mkdir(socks)
    procs = []
    try:
        backends = {n: start_backend(socks, n) for n in ["5300", "5301", "5302"]}
        procs.extend(backends.values())
        log_path = os.path.join(tmp, "balancer.log")
        extra = () if hedging else ("--hedge-after", "0")
        bal = start_balancer(socks, log_path, extra)
        procs.append(bal)
        qfile = write_queries(tmp)
        per_client = max(1, rate // len(CLIENTS))
        clients = [dnsperf(["-l", str(seconds), "-Q", str(per_client), "-q", "500", "-t", "1",
                            "-b", "4096", "-v"], src, qfile) for src in CLIENTS]
        procs.extend(clients)
        start = time.time()
        victim = backends[VICTIM]
        if kind == "hang":
            plan = [(5.0, "SIGSTOP"), (25.0, "SIGCONT")]
        else:
            plan = [(at + dt, what) for at in (5.0, 10.0, 15.0, 20.0, 25.0)
                    for dt, what in ((0.0, "SIGSTOP"), (0.3, "SIGCONT"))]
        events = []
        for at, what in plan:
            time.sleep(max(0.0, start + at - time.time()))
            victim.send_signal(signal.SIGSTOP if what == "SIGSTOP" else signal.SIGCONT)
            events.append(f"{what} {time.time() - start:.2f}")
        outs = [finish(c, timeout=seconds + 60) for c in clients]
        lat = [x for o in outs for x in latencies(o)]
        results = [parse_dnsperf(o) for o in outs]
        bal.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        bal.log.flush()
        counters, faults = {}, 0
        with open(log_path) as f:
            for line in f:
                if '"msg":"counters"' in line:
                    counters = {k: int(m.group(1)) for k in COUNTERS
                                for m in [re.search(rf'"{k}":(\d+)', line)] if m}
                if '"msg":"backend faulted (reset and reconnect)"' in line:
                    faults += 1
        return {
            "kind": kind, "hedging": hedging, "events": events,
            "sent": sum(r.get("sent", 0) for r in results),
            "lost": sum(r.get("lost", 0) for r in results),
            "answered": len(lat),
            "max_ms": 1000 * max(lat, default=0.0),
            "p999_ms": 1000 * percentile(lat, 0.999),
            "over_200ms": sum(1 for x in lat if x > 0.2),
            "over_100ms": sum(1 for x in lat if x > 0.1),
            "counters": counters, "faults": faults,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rate", type=int, default=12000)
    args = ap.parse_args()
    if args.seconds < 28:
        sys.exit("--seconds must cover the plan (28 s at least)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    lines = ["# A backend that stalls under steady load", "",
             f"{time.strftime('%Y-%m-%d')}, {os.uname().sysname} {os.uname().release}, "
             f"{os.cpu_count()} CPUs. Three demo backends; {len(CLIENTS)} dnsperf clients at "
             f"{args.rate} queries/s in all for {args.seconds} s, `-t 1` (a 1 s client "
             "timeout); backend 5301 (two clients' primary) stopped by SIGSTOP. Default "
             "balancer timers (passive check 500 ms, probe 500 ms, query timeout 2 s).",
             "", "Command: `bench/stall.py`", "",
             "| scenario | hedging | sent | past 1 s (lost) | longest wait | p99.9 | over 100 ms "
             "| over 200 ms | faults |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = []
    for kind in ["hang", "pause"]:
        for hedging in [True, False]:
            r = scenario(kind, hedging, args.seconds, args.rate)
            runs.append(r)
            label = "on (auto)" if hedging else "off (`--hedge-after 0`)"
            lines.append(f"| {kind} | {label} | {r['sent']} | {r['lost']} | {r['max_ms']:.0f} ms "
                         f"| {r['p999_ms']:.1f} ms | {r['over_100ms']} | {r['over_200ms']} "
                         f"| {r['faults']} |")
    lines += ["", "Balancer counters of each run:", ""]
    for r in runs:
        shown = ", ".join(f"{k} {v}" for k, v in r["counters"].items())
        lines.append(f"- {r['kind']}, hedging {'on' if r['hedging'] else 'off'} "
                     f"({'; '.join(r['events'][:2])}{' ...' if len(r['events']) > 2 else ''}): "
                     f"{shown}")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/stall.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
