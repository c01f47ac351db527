#!/usr/bin/env python3
"""Overload: offer the balancer far more queries than its backends can answer.

Three demo backends that each spend --cost-us of CPU per query (about 15k
queries/s between them at the default 200 us) sit behind the balancer; six
dnsperf clients with 50,000 queries outstanding each and a 1 s timeout offer many times that for
--seconds.  The script samples the balancer's RSS throughout, reads its
counters (SIGUSR1) at the end of the overload, then measures how soon a new
client is answered and runs a light load to show nothing is lost once the
overload stops.

    bench/overload.py [--seconds 15] [--cost-us 200]

Prints a report and writes bench/results/overload.md.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ROOT, ask, dnsperf, finish, parse_dnsperf, rss_kib,  # noqa: E402
                    start_backend, start_balancer, write_queries)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--cost-us", type=int, default=200)
    args = ap.parse_args()
    for tool in ["dnsperf"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install dnsperf")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="mnb-overload.")
    socks = os.path.join(tmp, "sockets")
    os.mkdir(socks)
    procs = []
    try:
        for n in ["5300", "5301", "5302"]:
            procs.append(start_backend(socks, n, ["--cost-us", str(args.cost_us)]))
        log_path = os.path.join(tmp, "balancer.log")
        bal = start_balancer(socks, log_path)
        procs.append(bal)
        qfile = write_queries(tmp)
        base = rss_kib(bal.pid)
        print("overload starts", file=sys.stderr)
        clients = [dnsperf(["-l", str(args.seconds), "-q", "50000", "-c", "4", "-t", "1"],
                           f"127.0.0.{20 + i}", qfile) for i in range(6)]
        procs.extend(clients)
        samples = []
        start = time.time()
        while any(c.poll() is None for c in clients) and time.time() - start < args.seconds + 30:
            samples.append((round(time.time() - start, 1), rss_kib(bal.pid)))
            time.sleep(0.5)
        results = [parse_dnsperf(finish(c)) for c in clients]
        ended = time.time()
        print("overload ended", file=sys.stderr)
        # Recovery: how soon a new client gets an answer.
        first_answer = None
        while time.time() - ended < 10:
            if ask("127.0.0.3", timeout=0.05) == 0:
                first_answer = time.time() - ended
                break
        bal.send_signal(signal.SIGUSR1)
        counters = None
        deadline = time.time() + 10
        while counters is None and time.time() < deadline:
            with open(log_path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "counters":
                        counters = rec
            time.sleep(0.1)
        after_rss = rss_kib(bal.pid)
        light = dnsperf(["-l", "3", "-Q", "2000", "-q", "50"], "127.0.0.40", qfile)
        light_r = parse_dnsperf(finish(light))
        sent = sum(r.get("sent", 0) for r in results)
        done = sum(r.get("completed", 0) for r in results)
        peak = max(r for _, r in samples) if samples else 0
        report = [
            "# Overload",
            "",
            f"{time.strftime('%Y-%m-%d')}, {os.uname().sysname} {os.uname().release}, "
            f"{os.cpu_count()} CPUs. Backends: 3 demo backends at {args.cost_us} us of CPU per query; "
            f"6 dnsperf clients x 4 sockets, 50000 outstanding each, 1 s timeout for {args.seconds} s.",
            "",
            f"- offered: {sent} queries ({sent / args.seconds:.0f}/s); completed by dnsperf: {done} "
            f"({100.0 * done / max(sent, 1):.1f}%, SERVFAIL answers included)",
            f"- balancer RSS: {base} KiB before, peak {peak} KiB during, {after_rss} KiB after",
            "- first answer to a new client after the overload: "
            + (f"{first_answer * 1000:.0f} ms" if first_answer is not None else "none within 10 s"),
            f"- light load right after (2000 q/s for 3 s): {light_r.get('completed', 0)} of "
            f"{light_r.get('sent', 0)} answered, {light_r.get('lost', 0)} lost",
        ]
        if counters:
            keys = ["udp_received", "udp_forwarded", "udp_replies", "dropped_stuck",
                    "dropped_inflight_full", "timeouts", "timeout_answers", "late_answers",
                    "inflight"]
            report.append("- balancer counters at the end: " +
                          ", ".join(f"{k} {counters.get(k)}" for k in keys))
        report.append("- RSS samples (s, KiB): " + " ".join(f"{t}:{r}" for t, r in samples))
        text = "\n".join(report) + "\n"
        print(text)
        os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench/results/overload.md"), "w") as f:
            f.write(text)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
