#!/usr/bin/env python3
"""Where a target's CPU goes at one offered load: counts per query.

bench/curve.py says how much CPU each target spends per query; this script
says on what.  It starts three backends (demo or node-mname), one target
(the balancer, the floor, the proxy floor, nginx or dnsdist, configured as bench/curve.py
configures them), loads it with three paced dnsperf processes from three
client addresses, and over a window of the load reads, for the target's
processes and threads:

- CPU time (schedstat) and context switches, voluntary (it slept) and
  involuntary (it was preempted), from /proc;
- with --counts (the default), system calls by kind, scheduler switches,
  inter-processor interrupts sent (a wake-up of a process asleep on another
  CPU) and (where `perf probe` can place a probe on libc's malloc) heap
  allocations, with `perf stat` on tracepoints: they cost the target next
  to nothing;
- with --record, a `perf record -g` profile, summarised by where the
  samples fall (kernel, tokio, the balancer, libc), the file kept;
- with --strace, `strace -c`, which slows the target: counts only.

Every figure is printed per query answered in the window.  One run is one
sample on a noisy machine: compare targets or builds in alternation, as
bench/ab.py and bench/curve.py do, before believing a difference.

    bench/profile.py --kind demo --rate 2000
    bench/profile.py --kind node --rate 2000 --proto tcp --target nginx
    bench/profile.py --kind demo --rate 2000 --record
    bench/profile.py --target balancer --balancer-args "--cache-size 10000"

Needs what bench/curve.py needs (dnsperf, perf; nginx, dnsdist for those
targets; node-mname for --kind node) and the release build
(`cargo build --release --workspace --bins`).  Must run as root for perf's
tracepoints.  Everything it starts is stopped by PID when it ends.
"""

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from common import proc_counts, query, user_system_ticks, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PORT = 16990
BACKEND_PORTS = [16991, 16992, 16993]
CLIENTS = ["127.0.0.13", "127.0.0.17", "127.0.0.27"]
READY_SRC = "127.0.0.2"
WARMUP_S = 2
SYSCALLS = ["epoll_wait", "epoll_pwait", "recvfrom", "sendto", "read", "write", "readv",
            "writev", "recvmsg", "sendmsg", "recvmmsg", "sendmmsg", "epoll_ctl"]
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
# Inter-processor interrupts the target sends (counted in its own context):
# a wake of a task that sleeps on another, idle CPU is one (bench/wakeup.c
# measures what a wake-up across CPUs costs here).
IPIS = ["ipi:ipi_send_cpu", "ipi:ipi_send_cpumask", "sched:sched_wake_idle_without_ipi"]


def answers(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((READY_SRC, 0))
        s.settimeout(0.2)
        s.sendto(query("www.example.com", 7), (HOST, port))
        data = s.recv(4096)
        return data[:2] == b"\0\x07" and data[3] & 0x0F == 0
    except OSError:
        return False
    finally:
        s.close()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def snapshot(pid):
    """CPU ns, voluntary and involuntary switches, user and system ticks
    of `pid` and its children (nginx's workers), every thread."""
    totals = [0, 0, 0, 0, 0]
    for p in [pid] + children(pid):
        counts = proc_counts(p) + user_system_ticks(p)
        totals = [t + c for t, c in zip(totals, counts)]
    return totals


def malloc_probe():
    """The perf event counting libc malloc calls, if a probe can be placed."""
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    if "probe_libc:malloc" not in listed:
        subprocess.run(["perf", "probe", "-x", LIBC, "malloc"], capture_output=True)
        listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    return "probe_libc:malloc" if "probe_libc:malloc" in listed else None


class Run:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mname-profile-"))
        self.procs = []

    def start(self, argv, log, **kw):
        p = subprocess.Popen([str(a) for a in argv], stdout=open(self.tmp / log, "w"),
                             stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def backends(self):
        socks = self.tmp / "sockets"
        socks.mkdir()
        pids = []
        for i, port in enumerate(BACKEND_PORTS):
            sock, name, log = socks / str(5300 + i), f"b{i + 1}", f"backend{i + 1}.log"
            if self.args.kind == "demo":
                argv = [REPO / "target/release/mname-demo-backend", "-s", sock, "-n", name,
                        "--udp", f"{HOST}:{port}", "--tcp", f"{HOST}:{port}"]
            else:
                argv = ["node", REPO / "tests/interop/backend.js", "--socket", sock, "--name", name,
                        "--port", port, "--address", HOST]
            pids.append(self.start(argv, log).pid)
            wait_for(lambda: b"backend ready" in (self.tmp / log).read_bytes(), f"backend {name}")
        return socks, pids

    def target(self, socks):
        a, name = self.args, self.args.target
        backends = [(HOST, p, f"b{i + 1}") for i, p in enumerate(BACKEND_PORTS)]
        if name == "balancer":
            p = self.start([REPO / "target/release/mname-balancer", "-b", HOST, "-p", PORT,
                            "-s", socks, "-l", "warn", *a.balancer_args.split()], "target.log")
        elif name == "floor":
            binary = self.tmp / "floor"
            subprocess.run(["cc", "-O2", "-o", binary, REPO / "bench/floor.c"], check=True)
            p = self.start([binary, HOST, PORT], "target.log")
        elif name == "floor-proxy":
            binary = self.tmp / "floor_proxy"
            subprocess.run(["cc", "-O2", "-o", binary, REPO / "bench/floor_proxy.c"], check=True)
            p = self.start([binary, HOST, PORT, *sorted(socks.iterdir())], "target.log")
        elif name == "nginx":
            work = self.tmp / "nginx"
            work.mkdir()
            conf = work / "nginx.conf"
            conf.write_text(peers.nginx_conf(HOST, PORT, backends, work, "bench/profile.py"))
            p = self.start(peers.nginx_argv(conf, work), "target.log")
        else:
            conf = self.tmp / "dnsdist.conf"
            conf.write_text(peers.dnsdist_conf(HOST, PORT, backends, generated_by="bench/profile.py"))
            p = self.start(peers.dnsdist_argv(conf), "target.log")
        wait_for(lambda: answers(PORT), name)
        return p.pid

    def load(self):
        qfile = self.tmp / "queries.txt"
        names = ["www.example.com A"] + [f"a{i}.example.com A" for i in range(1, 51)] + \
            ["whoami.example.com TXT"]
        qfile.write_text("\n".join(names) + "\n")
        seconds = WARMUP_S + self.args.seconds + 2
        out = []
        for src in CLIENTS:
            argv = ["dnsperf", "-s", HOST, "-p", PORT, "-d", qfile, "-l", seconds, "-q", 64,
                    "-c", 2, "-t", 2, "-a", src]
            if self.args.rate:
                argv += ["-Q", self.args.rate // len(CLIENTS)]
            if self.args.proto == "tcp":
                argv += ["-m", "tcp"]
            out.append(self.start(argv, f"dnsperf-{src}.out"))
        return out


def sent_and_answered(path):
    text = path.read_text()
    m = re.search(r"Queries completed:\s+(\d+)", text)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["demo", "node"], default="demo")
    ap.add_argument("--target", choices=["balancer", "floor", "floor-proxy", "nginx", "dnsdist"], default="balancer")
    ap.add_argument("--proto", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--rate", type=int, default=2000, help="offered q/s in all, 0 for unpaced (default 2000)")
    ap.add_argument("--seconds", type=int, default=5, help="measurement window (default 5)")
    ap.add_argument("--balancer-args", default="", help="extra flags for the balancer")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--record", action="store_true", help="perf record -g instead of counts")
    how.add_argument("--strace", action="store_true", help="strace -c instead of counts")
    args = ap.parse_args()
    if args.target == "floor" and args.proto == "tcp":
        ap.error("the floor answers UDP only")
    if not 1 <= args.seconds <= 120 or args.rate < 0:
        ap.error("--seconds takes 1..120, --rate 0 or more")

    run = Run(args)
    try:
        socks, _ = run.backends()
        pid = run.target(socks)
        clients = run.load()
        # Measured once the load has settled, not from its first queries.
        time.sleep(WARMUP_S)
        cpu0 = snapshot(pid)
        counts = ""
        if args.record:
            data = REPO / "bench" / "results" / f"profile-{args.target}-{args.kind}-{args.proto}.data"
            subprocess.run(["perf", "record", "-F", "4999", "-g", "-p", str(pid), "-o", str(data),
                            "--", "sleep", str(args.seconds)], capture_output=True)
            counts = record_summary(data)
        elif args.strace:
            r = subprocess.run(["timeout", "-s", "INT", str(args.seconds), "strace", "-c", "-f",
                                "-p", str(pid)], capture_output=True, text=True)
            counts = r.stderr
        else:
            events = [f"syscalls:sys_enter_{s}" for s in SYSCALLS] + ["sched:sched_switch"] + IPIS
            probe = malloc_probe()
            if probe:
                events.append(probe)
            pids = ",".join(str(p) for p in [pid] + children(pid))
            r = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(events), "-p", pids,
                                "--", "sleep", str(args.seconds)], capture_output=True, text=True)
            counts = r.stderr
        cpu1 = snapshot(pid)
        for c in clients:
            c.wait(timeout=WARMUP_S + args.seconds + 30)
        answered = sum(sent_and_answered(run.tmp / f"dnsperf-{src}.out") for src in CLIENTS)
        total_s = WARMUP_S + args.seconds + 2
        # The window's queries, at the rate the clients kept over the run.
        window_q = answered * args.seconds / total_s
        print(f"{args.target} in front of {args.kind} backends, {args.proto.upper()}, "
              f"offered {args.rate or 'unpaced'} q/s; {answered / total_s:,.0f} q/s answered")
        cpu, vol, invol, user, system = (b - a for a, b in zip(cpu0, cpu1))
        user_share = user / (user + system) if user + system else 0.0
        print(f"per query over the window: CPU {cpu / 1000 / window_q:.2f} us "
              f"({user_share:.0%} of it in user space, {user + system} ticks), "
              f"context switches {vol / window_q:.2f} voluntary + {invol / window_q:.2f} involuntary")
        if args.record or args.strace:
            print(counts)
        else:
            for line in counts.splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[0].strip().isdigit() and int(fields[0]) > 0:
                    event = fields[2].split(":")[-1].replace("sys_enter_", "")
                    print(f"  {event:14} {int(fields[0]) / window_q:8.2f} per query")
    finally:
        run.stop()


def record_summary(data):
    """Shares of the samples by where they fall."""
    r = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym",
                        "--stdio", "-g", "none"], capture_output=True, text=True)
    shares = {"kernel": 0.0, "tokio": 0.0, "balancer": 0.0, "libc/vdso": 0.0, "other": 0.0}
    top = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        share, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        if "kernel" in dso:
            where = "kernel"
        elif "tokio" in sym:
            where = "tokio"
        elif "mname" in sym:
            where = "balancer"
        elif "libc" in dso or "vdso" in dso:
            where = "libc/vdso"
        else:
            where = "other"
        shares[where] += share
        if len(top) < 15:
            top.append(f"  {share:5.2f}%  {sym[:100]}")
    return (f"samples in {data}:\n  " + ", ".join(f"{k} {v:.1f}%" for k, v in shares.items())
            + "\n" + "\n".join(top))


if __name__ == "__main__":
    main()
