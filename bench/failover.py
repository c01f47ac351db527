#!/usr/bin/env python3
"""Failover under load: how many queries a dying or hanging backend costs.

Three demo backends behind the balancer serve a steady load (six dnsperf
clients from six addresses, so every backend has clients, at --rate
queries/s in all).  Two scenarios, each on fresh processes:

- kill: `kill -9` of one backend a third of the way in; it is restarted
  two thirds of the way in (its clients move away, then back);
- hang: SIGSTOP of one backend a quarter of the way in, SIGCONT three
  quarters of the way in (20 s with the default --seconds); the socket
  stays open, so only the passive check or the heartbeat timeout can tell.

dnsperf's timeout (-t 5) is longer than the balancer's --query-timeout
(2 s), so an answer the balancer makes itself (SERVFAIL) counts as an
answer, and "lost" means a client got nothing at all.

    bench/failover.py [--seconds 40] [--rate 12000]

Prints a report and writes bench/results/failover.md.
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

CLIENTS = [f"127.0.0.{50 + i}" for i in range(6)]
VICTIM = "5301"


def rcodes(out):
    """dnsperf's "Response codes:" line as {name: count}."""
    m = re.search(r"Response codes:\s+(.*)", out)
    if not m:
        return {}
    return {name: int(n) for name, n in re.findall(r"([A-Z]+) (\d+)", m.group(1))}


def scenario(kind, seconds, rate):
    tmp = tempfile.mkdtemp(prefix=f"mnb-failover-{kind}.")
    socks = os.path.join(tmp, "sockets")
    os.mkdir(socks)
    procs = []
    try:
        backends = {n: start_backend(socks, n) for n in ["5300", "5301", "5302"]}
        procs.extend(backends.values())
        log_path = os.path.join(tmp, "balancer.log")
        bal = start_balancer(socks, log_path)
        procs.append(bal)
        qfile = write_queries(tmp)
        per_client = max(1, rate // len(CLIENTS))
        clients = [dnsperf(["-l", str(seconds), "-Q", str(per_client), "-q", "500", "-t", "5",
                            "-b", "4096"],
                           src, qfile) for src in CLIENTS]
        procs.extend(clients)
        start = time.time()
        events = []
        victim = backends[VICTIM]
        if kind == "kill":
            plan = [(seconds / 3, "kill -9"), (2 * seconds / 3, "restart")]
        else:
            plan = [(seconds / 4, "SIGSTOP"), (3 * seconds / 4, "SIGCONT")]
        for at, what in plan:
            time.sleep(max(0.0, start + at - time.time()))
            if what == "kill -9":
                victim.kill()
                victim.wait()
            elif what == "restart":
                victim = start_backend(socks, VICTIM)
                procs.append(victim)
            elif what == "SIGSTOP":
                victim.send_signal(signal.SIGSTOP)
            else:
                victim.send_signal(signal.SIGCONT)
            events.append(f"{what} {VICTIM} at {time.time() - start:.1f} s")
        outs = [finish(c, timeout=seconds + 60) for c in clients]
        results = [parse_dnsperf(o) for o in outs]
        codes = {}
        for o in outs:
            for k, v in rcodes(o).items():
                codes[k] = codes.get(k, 0) + v
        bal.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        bal.log.flush()
        counters = ""
        with open(log_path) as f:
            for line in f:
                if '"msg":"counters"' in line:
                    counters = line
        keys = ["udp_received", "udp_forwarded", "replayed", "timeouts", "timeout_answers",
                "dropped_no_backend", "no_backend_answers", "dropped_stuck", "late_answers"]
        shown = ", ".join(f"{k} {m.group(1)}" for k in keys
                          for m in [re.search(rf'"{k}":(\d+)', counters)] if m)
        faults = []
        with open(log_path) as f:
            for line in f:
                for msg in ["backend socket EOF", "backend socket error",
                            "backend faulted (reset and reconnect)", "no heartbeat from backend",
                            "replayed queries in flight to other backends",
                            "backend answers no queries (probing)"]:
                    if f'"msg":"{msg}"' in line:
                        faults.append(msg + (" (passive check)" if "passive_check" in line else ""))
        sent = sum(r.get("sent", 0) for r in results)
        done = sum(r.get("completed", 0) for r in results)
        lost = sum(r.get("lost", 0) for r in results)
        return {"kind": kind, "sent": sent, "completed": done, "lost": lost, "codes": codes,
                "events": events, "counters": shown, "log": sorted(set(faults))}
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
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--rate", type=int, default=12000)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    lines = ["# Failover under load", "",
             f"{time.strftime('%Y-%m-%d')}, {os.uname().sysname} {os.uname().release}, "
             f"{os.cpu_count()} CPUs. Three demo backends; {len(CLIENTS)} dnsperf clients at "
             f"{args.rate} queries/s in all for {args.seconds} s, dnsperf -t 5; default "
             "balancer timers (query timeout 2 s, passive check 500 ms, heartbeat 5 s/15 s).",
             "", "Command: `bench/failover.py`", ""]
    for kind in ["kill", "hang"]:
        r = scenario(kind, args.seconds, args.rate)
        pct = 100.0 * r["lost"] / max(r["sent"], 1)
        codes = ", ".join(f"{k} {v}" for k, v in sorted(r["codes"].items()))
        lines += [f"## {kind}", "",
                  f"- {'; '.join(r['events'])}",
                  f"- sent {r['sent']}, answered {r['completed']}, lost {r['lost']} ({pct:.3f}%)",
                  f"- answers by rcode: {codes}",
                  f"- balancer counters: {r['counters']}",
                  f"- balancer log: {', '.join(r['log']) or 'nothing'}", ""]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/failover.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
