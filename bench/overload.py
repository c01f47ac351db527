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
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 15700


def query(name, qid, qtype=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ask(src, timeout=0.2):
    """One query from `src`; the rcode, or None on timeout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    try:
        s.sendto(query("www.example.com", 77), ("127.0.0.1", PORT))
        data = s.recv(4096)
        return data[3] & 0x0F
    except OSError:
        return None
    finally:
        s.close()


def dnsperf(args, src, qfile):
    """Start dnsperf with its output in a file: under overload it prints a
    warning per late answer, which would fill a pipe nobody reads yet and
    stop it.  finish() waits for it and returns the output."""
    out = tempfile.TemporaryFile(mode="w+")
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-a", src, "-d", qfile] + args
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    p.out = out
    return p


def finish(p, timeout=120):
    p.wait(timeout=timeout)
    p.out.seek(0)
    return p.out.read()


def parse_dnsperf(out):
    r = {}
    for line in out.splitlines():
        line = line.strip()
        for key, name in [("Queries sent:", "sent"), ("Queries completed:", "completed"),
                          ("Queries lost:", "lost")]:
            if line.startswith(key):
                r[name] = int(line.split()[2])
    return r


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
            p = subprocess.Popen([os.path.join(ROOT, "target/release/mname-demo-backend"),
                                  "-s", os.path.join(socks, n), "--cost-us", str(args.cost_us)],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            p.stdout.readline()
        log_path = os.path.join(tmp, "balancer.log")
        log = open(log_path, "w")
        bal = subprocess.Popen([os.path.join(ROOT, "target/release/mname-balancer"),
                                "-b", "127.0.0.1", "-p", str(PORT), "-s", socks, "-l", "info"],
                               stdout=log, stderr=subprocess.STDOUT)
        procs.append(bal)
        deadline = time.time() + 20
        while ask("127.0.0.2") != 0:
            if time.time() > deadline:
                sys.exit("balancer not answering")
        qfile = os.path.join(tmp, "queries")
        with open(qfile, "w") as f:
            f.write("www.example.com A\na1.example.com A\nwhoami.example.com TXT\n")
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
            f"- first answer to a new client after the overload: "
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
