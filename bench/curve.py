#!/usr/bin/env python3
"""Load curve: CPU per query of mname-balancer, dnsdist and nginx, and of a
single-threaded UDP responder (the floor), at offered rates from a few
thousand queries/s to full speed, in front of demo backends and of real
node-mname backends.

For each backend kind (demo: three mname-demo-backend processes; node: three
node-mname processes, tests/interop/backend.js --port), the script starts the backends,
mname-balancer in front of their AF_UNIX sockets, dnsdist and nginx in front of
their plain UDP/TCP ports (configured by bench/peers.py), the floor
(bench/floor.c) and the proxy floor (bench/floor_proxy.c, in front of the
AF_UNIX sockets).  Then, at each offered rate (dnsperf -Q, summed over three
dnsperf processes from three client addresses), it loads each target in turn
(balancer, dnsdist, nginx, floor, proxy floor; each round starting one target
later) for --rounds rounds, after an unmeasured warm-up of every target,
measures the target's CPU (its process, threads and children) and the
backends' CPU, and reports medians.

    bench/curve.py            # 3 rounds x 5 s, both kinds (about 12 minutes)
    bench/curve.py --smoke    # 1 round x 2 s, two rates, TCP at full speed only (under a minute)

Standard library only.  See bench/README.md for what each number means.
"""

import argparse
import itertools
import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ from the imports below
import peers  # noqa: E402
import run as rb  # noqa: E402  (process and DNS helpers shared with bench/run.py)
from run import BenchError, log  # noqa: E402

REPO = rb.REPO
HOST = rb.HOST
BALANCER_BIN = rb.BALANCER_BIN
BACKEND_BIN = rb.BACKEND_BIN
NODE_BACKEND_JS = REPO / "tests" / "interop" / "backend.js"
FLOOR_C = REPO / "bench" / "floor.c"
FLOOR_PROXY_C = REPO / "bench" / "floor_proxy.c"
MNAME_MARKER = REPO / "tests" / "interop" / "node_modules" / "mname" / "package.json"

# Ports of their own, so that bench/run.py (15xxx) may hold its own.
BACKEND_PORTS = [16301, 16302, 16303]
PORTS = {"mname-balancer": 16400, "dnsdist": 16500, "nginx": 16600, "floor": 16700,
         "floor-proxy": 16800, "floor-proxy-yield": 16801, "floor-proxy-workers": 16802,
         "floor-proxy-threads": 16803}
TARGETS = ["mname-balancer", "dnsdist", "nginx", "floor", "floor-proxy"]
FLOORS = ["floor", "floor-proxy"]  # drawn dashed: references, not peers
PROXIES = ["mname-balancer", "dnsdist", "nginx"]
SHORT = {"mname-balancer": "balancer", "dnsdist": "dnsdist", "nginx": "nginx", "floor": "floor",
         "floor-proxy": "proxy floor", "floor-proxy-yield": "proxy floor+yield",
         "floor-proxy-workers": "proxy floor, a worker per CPU",
         "floor-proxy-threads": "proxy floor, blocking threads"}
WARMUP_S = 2  # unmeasured load through each target before a kind's first measured rate, per protocol
READINESS_SRC = "127.0.0.2"  # readiness checks come from here, never from a load client
N_CLIENTS = 3
CANDIDATES = [f"127.0.0.{i}" for i in range(11, 80)]

# dnsperf, per process: -q outstanding, -c sockets/connections, -t timeout.
DNSPERF_OUTSTANDING = 64
DNSPERF_CLIENTS = 2
DNSPERF_TIMEOUT = 2

FULL = "full"
DEFAULT_RATES = {
    "demo": {"udp": [2000, 15000, 50000, 100000, FULL], "tcp": [15000, FULL]},
    "node": {"udp": [2000, 8000, FULL], "tcp": [2000, FULL]},
}
KIND_DESC = {
    "demo": "three mname-demo-backend processes",
    "node": "three node-mname processes (tests/interop/backend.js --port)",
}


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------

def sched_ns(pid):
    """On-CPU time (user + system) of every live thread of pid, in ns, from
    /proc/PID/task/TID/schedstat: {tid: ns}."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


class CpuMeter:
    """CPU of process trees over a window: utime+stime from /proc/PID/stat
    (whole process, all threads, 1/CLK_TCK resolution) and the sum of the
    threads' schedstat (ns resolution, live threads only)."""

    def __init__(self, roots):
        self.roots = list(roots)
        self.pids = self._pids()
        self.ticks0 = {p: rb.proc_ticks(p) or 0 for p in self.pids}
        self.ns0 = {p: sched_ns(p) for p in self.pids}

    def _pids(self):
        ppids = rb.all_ppids()
        pids = set()
        for r in self.roots:
            pids.update(rb.descendants(r, ppids))
        return pids

    def stop(self):
        """(stat seconds, schedstat seconds) used since the start."""
        pids = self.pids | self._pids()
        ticks = ns = 0
        for p in pids:
            t = rb.proc_ticks(p)
            if t is not None:
                ticks += t - self.ticks0.get(p, 0)
            before = self.ns0.get(p, {})
            for tid, v in sched_ns(p).items():
                ns += v - before.get(tid, 0)
        return ticks / rb.CLK_TCK, ns / 1e9


# --------------------------------------------------------------------------
# The targets
# --------------------------------------------------------------------------

class Curve:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.procs = rb.Procs()
        self.qfile = self.tmp / "queries.txt"
        names = ["www.example.com A"] + [f"a{i}.example.com A" for i in range(1, 51)] \
            + ["whoami.example.com TXT"]
        self.qfile.write_text("\n".join(names) + "\n")
        self.floor_bin = self.tmp / "floor"
        self.floor_proxy_bin = self.tmp / "floor_proxy"
        self.notes = []
        self.reset()

    def reset(self):
        self.backends = []
        self.targets = {}
        self.clients = []
        self.pinning = {}

    def note(self, msg):
        log(f"NOTE: {msg}")
        self.notes.append(msg)

    def build_floor(self):
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise BenchError("no C compiler (cc) to build bench/floor.c: apt-get install gcc")
        for src, binary in ((FLOOR_C, self.floor_bin), (FLOOR_PROXY_C, self.floor_proxy_bin)):
            r = subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(src)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise BenchError(f"cc {src.relative_to(REPO)} failed:\n{r.stdout}{r.stderr}")

    def wait_ports_free(self):
        rb.wait_ports_free(BACKEND_PORTS + list(PORTS.values()))

    def start_kind(self, kind):
        self.reset()
        self.wait_ports_free()
        sockdir = self.tmp / f"sockets-{kind}"
        sockdir.mkdir()
        for i, port in enumerate(BACKEND_PORTS):
            sock = sockdir / str(5300 + i)
            name = f"b{i + 1}"
            logpath = self.tmp / f"{kind}-backend{i + 1}.log"
            if kind == "demo":
                argv = [BACKEND_BIN, "-s", sock, "-n", name,
                        "--udp", f"{HOST}:{port}", "--tcp", f"{HOST}:{port}"]
            else:
                argv = ["node", NODE_BACKEND_JS, "--socket", sock, "--name", name,
                        "--port", port, "--address", HOST]
            self.backends.append(self.procs.start(f"{kind} backend {name}", argv, logpath))
        deadline = time.monotonic() + rb.READY_TIMEOUT
        for i, p in enumerate(self.backends):
            logpath = self.tmp / f"{kind}-backend{i + 1}.log"
            while b"backend ready" not in logpath.read_bytes():
                self.procs.check_alive(p)
                if time.monotonic() > deadline:
                    raise BenchError(f"{kind} backend b{i + 1} not ready:\n{rb.tail(logpath)}")
                time.sleep(0.02)
            rb.wait_answers(self.procs, p, f"{kind} backend b{i + 1}", BACKEND_PORTS[i], src=READINESS_SRC)

        backends = [(HOST, port, f"b{i + 1}") for i, port in enumerate(BACKEND_PORTS)]

        # mname-balancer, over the AF_UNIX sockets; connected to every
        # backend before its first query (a client is pinned at its first).
        logpath = self.tmp / f"{kind}-balancer.log"
        p = self.procs.start("mname-balancer", [
            BALANCER_BIN, "-b", HOST, "-p", PORTS["mname-balancer"], "-s", sockdir, "-l", "warn",
        ], logpath)
        self.targets["mname-balancer"] = p
        paths = [str(sockdir / str(5300 + i)) for i in range(len(BACKEND_PORTS))]
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while not all(rb.unix_connections(path) >= 1 for path in paths):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"mname-balancer did not connect to all backends:\n{rb.tail(logpath)}")
            time.sleep(0.02)
        rb.wait_answers(self.procs, p, "mname-balancer", PORTS["mname-balancer"], src=READINESS_SRC)

        # dnsdist
        conf = self.tmp / f"{kind}-dnsdist.conf"
        conf.write_text(peers.dnsdist_conf(HOST, PORTS["dnsdist"], backends, generated_by="bench/curve.py"))
        r = subprocess.run(peers.dnsdist_check_argv(conf), capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"dnsdist rejects its configuration:\n{r.stdout}{r.stderr}")
        logpath = self.tmp / f"{kind}-dnsdist.log"
        p = self.procs.start("dnsdist", peers.dnsdist_argv(conf), logpath)
        self.targets["dnsdist"] = p
        rb.wait_answers(self.procs, p, "dnsdist", PORTS["dnsdist"], src=READINESS_SRC)
        # The policy hashes over the servers that are up: wait for every
        # backend's first health check.
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while logpath.read_text(errors="replace").count(" as 'up'") < len(BACKEND_PORTS):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"dnsdist did not mark every backend up:\n{rb.tail(logpath)}")
            time.sleep(0.05)

        # nginx
        ngdir = self.tmp / f"{kind}-nginx"
        ngdir.mkdir()
        conf = ngdir / "nginx.conf"
        conf.write_text(peers.nginx_conf(HOST, PORTS["nginx"], backends, ngdir, generated_by="bench/curve.py"))
        p = self.procs.start("nginx", peers.nginx_argv(conf, ngdir), self.tmp / f"{kind}-nginx.log")
        self.targets["nginx"] = p
        rb.wait_answers(self.procs, p, "nginx", PORTS["nginx"], src=READINESS_SRC)

        # the floor
        logpath = self.tmp / f"{kind}-floor.log"
        p = self.procs.start("floor", [self.floor_bin, HOST, PORTS["floor"]], logpath)
        self.targets["floor"] = p
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while not floor_answers(PORTS["floor"]):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"the floor does not answer:\n{rb.tail(logpath)}")
            time.sleep(0.02)

        # the proxy floor, over the same AF_UNIX sockets as the balancer
        # (and, with --floor-proxy-yield, again with the balancer's yield
        # after a read that ends inside a frame; with --floor-proxy-workers,
        # again as a worker process per CPU, as nginx runs; with
        # --floor-proxy-threads, as blocking threads, as dnsdist runs)
        workers = ["-w", str(len(os.sched_getaffinity(0)))]
        for t, flags in (("floor-proxy", []), ("floor-proxy-yield", ["-y"]), ("floor-proxy-workers", workers),
                         ("floor-proxy-threads", ["-t"])):
            if t not in TARGETS:
                continue
            logpath = self.tmp / f"{kind}-{t}.log"
            p = self.procs.start(t, [self.floor_proxy_bin, *flags, HOST, PORTS[t], *paths], logpath)
            self.targets[t] = p
            deadline = time.monotonic() + rb.READY_TIMEOUT
            while not rb.answers_ok(PORTS[t], READINESS_SRC, False):
                self.procs.check_alive(p)
                if time.monotonic() > deadline:
                    raise BenchError(f"the {SHORT[t]} does not answer:\n{rb.tail(logpath)}")
                time.sleep(0.02)

        self.choose_clients()

    def choose_clients(self):
        """Three client addresses that dnsdist's and nginx's hashes put on
        three different backends (each proxy pins a client address to one
        backend, so three addresses on two backends would leave one idle);
        the balancer then pins them round-robin, one per backend."""
        seen = {"dnsdist": {}, "nginx": {}}
        chosen = None
        for k, cand in enumerate(CANDIDATES):
            for t in seen:
                seen[t][cand] = rb.whoami(PORTS[t], cand)
            # only the combinations with the new candidate are new
            for rest in itertools.combinations(CANDIDATES[:k], N_CLIENTS - 1):
                combo = list(rest) + [cand]
                if all(spread([seen[t][c] for c in combo]) for t in seen):
                    chosen = combo
                    break
            if chosen:
                break
        if chosen is None:
            chosen = CANDIDATES[:N_CLIENTS]
            self.note(f"no {N_CLIENTS} client addresses among {CANDIDATES[0]}..{CANDIDATES[-1]} are spread "
                      f"over {N_CLIENTS} backends by both dnsdist and nginx; using {chosen}")
        self.clients = chosen
        for t in PROXIES:
            self.pinning[t] = {c: rb.whoami(PORTS[t], c) for c in chosen}
            if not spread(list(self.pinning[t].values())):
                self.note(f"{t}: clients pinned to {self.pinning[t]}, not one per backend")

    def check_all_alive(self):
        for p in self.backends + list(self.targets.values()):
            self.procs.check_alive(p)

    # ---- one load run ----

    def load_run(self, kind, target, proto, rate, seconds, rnd):
        port = PORTS[target]
        argv_base = ["dnsperf", "-s", HOST, "-p", str(port), "-d", str(self.qfile),
                     "-l", str(seconds), "-q", str(DNSPERF_OUTSTANDING),
                     "-c", str(DNSPERF_CLIENTS), "-t", str(DNSPERF_TIMEOUT)]
        if proto == "tcp":
            argv_base += ["-m", "tcp"]
        if rate != FULL:
            per = max(1, round(rate / len(self.clients)))
            argv_base += ["-Q", str(per)]
        ppids = rb.all_ppids()
        ours = set(rb.descendants(os.getpid(), ppids))
        before_all = rb.all_proc_ticks()
        busy0 = rb.machine_busy_ticks()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        tmeter = CpuMeter([self.targets[target].pid])
        bmeter = CpuMeter([b.pid for b in self.backends])
        t0 = time.monotonic()
        runs = []
        for i, src in enumerate(self.clients):
            out = self.tmp / f"dnsperf-{kind}-{target}-{proto}-{rate}-{rnd}-{i}.out"
            p = self.procs.start(f"dnsperf {src}", argv_base + ["-a", src], out)
            runs.append((p, out, src))
        try:
            for p, _, _ in runs:
                # bounded: dnsperf stops after -l and waits at most -t for answers
                p.wait(timeout=seconds + DNSPERF_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"dnsperf against {target} did not finish in time")
        for p, _, _ in runs:
            self.procs.forget(p)
        wall = time.monotonic() - t0
        t_stat, t_sched = tmeter.stop()
        b_stat, b_sched = bmeter.stop()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1 = rb.machine_busy_ticks()
        after_all = rb.all_proc_ticks()
        ours.update(rb.descendants(os.getpid(), rb.all_ppids()))
        other = sum(after_all[p] - before_all.get(p, after_all[p]) for p in set(after_all) - ours) / rb.CLK_TCK

        clients = rb.read_dnsperf_runs(runs, target)
        self.check_all_alive()
        completed = sum(c["completed"] for c in clients)
        sent = sum(c["sent"] for c in clients)
        lost = sum(c["lost"] for c in clients)
        t_cpu = t_sched if self.args.cpu == "schedstat" else t_stat
        b_cpu = b_sched if self.args.cpu == "schedstat" else b_stat

        def per_q(x):
            return 1e6 * x / completed if completed else None
        return {
            "kind": kind, "target": target, "proto": proto, "rate": rate, "round": rnd,
            "seconds": seconds, "wall_s": wall,
            "sent": sent, "completed": completed, "lost": lost,
            "loss_pct": 100.0 * lost / sent if sent else None,
            "qps": sum(c["qps"] or 0 for c in clients),
            "cpu_s": t_cpu, "cpu_us_per_query": per_q(t_cpu),
            "cpu_stat_s": t_stat, "cpu_schedstat_s": t_sched,
            "cpu_stat_us_per_query": per_q(t_stat), "cpu_schedstat_us_per_query": per_q(t_sched),
            "backends_cpu_s": b_cpu, "backends_cpu_us_per_query": per_q(b_cpu),
            "backends_cpu_stat_s": b_stat, "backends_cpu_schedstat_s": b_sched,
            "dnsperf_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "other_processes_cpu_s": other,
            "machine_busy_cpu_s": (busy1 - busy0) / rb.CLK_TCK,
            "clients": clients,
        }


def spread(backends):
    """Whether these clients' backends are all known and all different."""
    return "?" not in backends and len(set(backends)) == len(backends)


def floor_answers(port):
    """Whether the floor echoes a query back with QR set."""
    pkt = rb.dns_query_packet("www.example.com", "A", 0x4242)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.bind((READINESS_SRC, 0))
        try:
            s.sendto(pkt, (HOST, port))
            data = s.recv(4096)
        except OSError:
            return False
    return len(data) == len(pkt) and data[:2] == pkt[:2] and data[2] & 0x80 != 0


# --------------------------------------------------------------------------
# Summaries and output
# --------------------------------------------------------------------------

def rate_label(rate):
    return "full" if rate == FULL else f"{rate:,}"


def summarize(runs):
    """(kind, proto, rate, target) -> medians over rounds."""
    groups = {}
    for r in runs:
        groups.setdefault((r["kind"], r["proto"], r["rate"], r["target"]), []).append(r)
    summary = {}
    for key, rs in groups.items():
        sent = sum(r["sent"] for r in rs)
        lost = sum(r["lost"] for r in rs)

        def med(field):
            vals = [r[field] for r in rs if r[field] is not None]
            return statistics.median(vals) if vals else None
        summary[key] = {
            "rounds": len(rs),
            "qps": med("qps"),
            "qps_min": min(r["qps"] for r in rs), "qps_max": max(r["qps"] for r in rs),
            "cpu_us_per_query": med("cpu_us_per_query"),
            "cpu_stat_us_per_query": med("cpu_stat_us_per_query"),
            "cpu_schedstat_us_per_query": med("cpu_schedstat_us_per_query"),
            "backends_cpu_us_per_query": med("backends_cpu_us_per_query"),
            "loss_pct": 100.0 * lost / sent if sent else None,
            "lost": lost, "sent": sent,
            "other_processes_cpu_s_max": max(r["other_processes_cpu_s"] for r in rs),
        }
    return summary


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def curve_rows(summary, kind, proto, rates):
    rows = []
    for rate in rates:
        s = {t: summary.get((kind, proto, rate, t)) for t in TARGETS}
        if not any(s.values()):
            continue
        row = [proto.upper(), rate_label(rate)]
        for t in TARGETS:
            if s[t] is None:
                row += ["-", "-"]
                continue
            short = rate != FULL and s[t]["qps"] < 0.95 * rate
            row += [fmt(s[t]["cpu_us_per_query"], ".2f"), f"{s[t]['qps']:,.0f}" + (" (short)" if short else "")]
        bal = s["mname-balancer"]["cpu_us_per_query"] if s["mname-balancer"] else None
        dd = s["dnsdist"]["cpu_us_per_query"] if s["dnsdist"] else None
        ng = s["nginx"]["cpu_us_per_query"] if s["nginx"] else None
        fl = s["floor"]["cpu_us_per_query"] if s["floor"] and rate != FULL else None
        pf = s["floor-proxy"]["cpu_us_per_query"] if s["floor-proxy"] else None
        row += [fmt(ratio(bal, dd), ".2f"), fmt(ratio(bal, 2 * fl if fl else None), ".2f"),
                fmt(ratio(pf, 2 * fl if fl else None), ".2f"), fmt(ratio(bal, pf), ".2f"),
                fmt(ratio(bal, ng), ".2f")]
        rows.append(row)
    return rows


def curve_table(summary, kind, rates_by_proto):
    headers = ["proto", "offered q/s"]
    for t in TARGETS:
        headers += [f"{SHORT[t]} us/q", f"{SHORT[t]} q/s"]
    headers += ["bal / dnsdist", "bal / (2 x floor)", "proxy floor / (2 x floor)", "bal / proxy floor",
                "bal / nginx"]
    rows = []
    for proto, rates in rates_by_proto.items():
        rows += curve_rows(summary, kind, proto, rates)
    return rb.fmt_table(headers, rows, ["<", ">"] + [">"] * (len(headers) - 2))


def detail_table(summary, kind, rates_by_proto):
    headers = ["proto", "offered q/s"]
    for t in TARGETS:
        headers += [f"{SHORT[t]} loss %", f"{SHORT[t]} backends us/q"]
    rows = []
    for proto, rates in rates_by_proto.items():
        for rate in rates:
            row = [proto.upper(), rate_label(rate)]
            any_ = False
            for t in TARGETS:
                s = summary.get((kind, proto, rate, t))
                if s is None:
                    row += ["-", "-"]
                    continue
                any_ = True
                row += [fmt(s["loss_pct"], ".3f"), fmt(s["backends_cpu_us_per_query"], ".2f")]
            if any_:
                rows.append(row)
    return rb.fmt_table(headers, rows, ["<", ">"] + [">"] * (len(headers) - 2))


def results_md(env, args, plan, summary, runs, curve, pinnings):
    v = env["versions"]
    lines = [
        "# Load curve: CPU per query against offered rate",
        "",
        f"- date: {env['date']}" + (" (smoke run)" if args.smoke else ""),
        f"- system: {env['uname']}, nproc {env['nproc']}, CPU: {env['cpu_model']}",
        f"- load average at start: {env['loadavg_at_start']}",
        f"- versions: mname-balancer {v['mname-balancer']}, {v['dnsdist']}, {v['nginx']}, "
        f"dnsperf {v['dnsperf']}, node {env.get('node', '-')}, node-mname {env.get('node-mname', '-')}",
        f"- load: {N_CLIENTS} dnsperf processes (one per client address), each "
        f"-q {DNSPERF_OUTSTANDING} -c {DNSPERF_CLIENTS} -t {DNSPERF_TIMEOUT} -l {args.seconds} and "
        f"-Q (offered rate / {N_CLIENTS}); {args.rounds} interleaved round(s) "
        f"({', '.join(SHORT[t] for t in TARGETS)}; each round starts one target later"
        + ("" if args.smoke else f", after {WARMUP_S} s of unmeasured load through each target") + "); medians",
        f"- CPU: {'/proc/PID/stat utime+stime' if args.cpu == 'stat' else 'sum of /proc/PID/task/TID/schedstat'}"
        " of the target's process tree (all threads, children such as nginx workers), "
        "divided by the queries completed",
        "- mname-balancer: `-l warn`, default flags, over the backends' AF_UNIX sockets",
        f"- dnsdist: {peers.dnsdist_desc()}",
        f"- nginx: {peers.nginx_desc()}",
        "- floor: bench/floor.c, one thread, blocking recvmmsg/sendmmsg, answers by setting QR (UDP only)",
        "- proxy floor: bench/floor_proxy.c, one thread and epoll over the balancer's AF_UNIX sockets: per "
        "query the system calls mname-balancer makes (recvmmsg, send, recv, sendmmsg) and nothing else; over TCP "
        "a session per client connection (INBOUND_TCP, INBOUND_TCP_OK), then one read and one write per chunk each way",
    ]
    if "floor-proxy-workers" in TARGETS:
        lines.append("- proxy floor, a worker per CPU: the proxy floor with `-w N`: N processes (N = the CPUs), each "
                     "pinned to its CPU, with sockets of its own bound with SO_REUSEPORT, as nginx runs here")
    if "floor-proxy-threads" in TARGETS:
        lines.append("- proxy floor, blocking threads: the proxy floor with `-t`, dnsdist's layout: one thread "
                     "blocked in recvmmsg on the UDP socket, a thread per backend blocked in recv; no epoll (UDP only)")
    if "floor-proxy-yield" in TARGETS:
        lines.append("- proxy floor+yield: the proxy floor with `-y`: after a read from a backend that ends inside "
                     "a frame, sched_yield once and read again, as mname-balancer does (UDP only)")
    for kind in plan:
        rbp = plan[kind]
        lines += ["", f"## {kind}: {KIND_DESC[kind]}", "",
                  "client -> backend pinning: " + "; ".join(
                      f"{SHORT[t]}: " + ", ".join(f"{c} -> {b}" for c, b in pinnings[kind].get(t, {}).items())
                      for t in PROXIES),
                  "", curve_table(summary, kind, rbp),
                  "", "Loss and the backends' CPU per query:", "", detail_table(summary, kind, rbp)]
    lines += ["", "## Per-round numbers", "",
              rb.fmt_table(["kind", "proto", "offered", "round", "target", "q/s", "lost",
                            "CPU us/q (stat)", "CPU us/q (schedstat)", "backends us/q",
                            "dnsperf CPU s", "other procs CPU s"],
                           [[r["kind"], r["proto"], rate_label(r["rate"]), r["round"], SHORT[r["target"]],
                             f"{r['qps']:,.0f}", r["lost"], fmt(r["cpu_stat_us_per_query"], ".2f"),
                             fmt(r["cpu_schedstat_us_per_query"], ".2f"),
                             fmt(r["backends_cpu_us_per_query"], ".2f"),
                             f"{r['dnsperf_cpu_s']:.2f}", f"{r['other_processes_cpu_s']:.2f}"] for r in runs])]
    if curve.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in curve.notes]
    lines += ["", "Columns are explained in bench/README.md (\"Load curve\"). Plot: curve.svg; "
              "raw numbers: curve.json.", ""]
    return "\n".join(lines)


COLORS = {"mname-balancer": "#1f77b4", "dnsdist": "#d62728", "nginx": "#2ca02c", "floor": "#7f7f7f",
          "floor-proxy": "#9467bd", "floor-proxy-yield": "#8c564b", "floor-proxy-workers": "#e377c2",
          "floor-proxy-threads": "#bcbd22"}


def svg_curve(summary, plan):
    """One panel per (kind, protocol): CPU us/query against offered rate (log x), a line per target."""
    panels = [(k, p, rates) for k, rbp in plan.items() for p, rates in rbp.items() if rates]
    cols = 2
    pw, ph, mx, my = 430, 280, 70, 60
    W = cols * (pw + mx) + 40
    rows_n = math.ceil(len(panels) / cols)
    H = 70 + rows_n * (ph + my + 40)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
           'CPU per query against offered rate (medians; "full": unpaced)</text>']
    lx = 60
    for t in TARGETS:
        out.append(f'<line x1="{lx}" y1="44" x2="{lx + 24}" y2="44" stroke="{COLORS[t]}" stroke-width="3"'
                   + (' stroke-dasharray="5,3"' if t in FLOORS else "") + '/>')
        out.append(f'<text x="{lx + 30}" y="48">{t}</text>')
        lx += 140
    out.append(f'<line x1="{lx}" y1="44" x2="{lx + 24}" y2="44" stroke="#bbbbbb" stroke-width="1.5" '
               'stroke-dasharray="2,3"/>')
    out.append(f'<text x="{lx + 30}" y="48">2 x floor (paced rates)</text>')
    for i, (kind, proto, rates) in enumerate(panels):
        x0 = 20 + mx + (i % cols) * (pw + mx)
        y0 = 80 + (i // cols) * (ph + my + 40)
        numeric = [r for r in rates if r != FULL]
        lo = math.log10(min(numeric)) if numeric else 3.0
        hi = math.log10(max(numeric)) if numeric else 3.0
        span = max(hi - lo, 0.5)
        xs = {}
        for r in rates:
            pos = (math.log10(r) - lo) / span if r != FULL else (hi - lo + 0.35 * span) / span
            xs[r] = pos
        xmax = max(xs.values()) or 1.0

        def X(r):
            return x0 + 10 + (pw - 20) * xs[r] / xmax
        vals = [summary[(kind, proto, r, t)]["cpu_us_per_query"] * (2 if t == "floor" and r != FULL else 1)
                for r in rates for t in TARGETS
                if (kind, proto, r, t) in summary and summary[(kind, proto, r, t)]["cpu_us_per_query"] is not None]
        vmax = max(vals) * 1.1 if vals else 1.0
        step = 10 ** math.floor(math.log10(vmax / 4)) if vmax > 0 else 1
        for m in (1, 2, 2.5, 5, 10):
            if vmax / (m * step) <= 6:
                step *= m
                break
        vtop = step * math.ceil(vmax / step)

        def Y(v):
            return y0 + ph - ph * v / vtop
        out.append(f'<text x="{x0}" y="{y0 - 10}" font-size="14" font-weight="bold">'
                   f'{kind} backends, {proto.upper()}: CPU us/query</text>')
        k = 0
        while step * k <= vtop + 1e-9:
            y = Y(step * k)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{step * k:g}</text>')
            k += 1
        out.append(f'<line x1="{x0}" y1="{y0 + ph}" x2="{x0 + pw}" y2="{y0 + ph}" stroke="#333"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + ph}" stroke="#333"/>')
        for r in rates:
            lbl = "full" if r == FULL else (f"{r // 1000}k" if r >= 1000 else str(r))
            out.append(f'<line x1="{X(r):.1f}" y1="{y0 + ph}" x2="{X(r):.1f}" y2="{y0 + ph + 5}" stroke="#333"/>')
            out.append(f'<text x="{X(r):.1f}" y="{y0 + ph + 18}" text-anchor="middle">{lbl}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 34}" text-anchor="middle" fill="#555">'
                   'offered queries/s (log scale)</text>')
        for t in TARGETS:
            pts = [(X(r), Y(summary[(kind, proto, r, t)]["cpu_us_per_query"])) for r in rates
                   if (kind, proto, r, t) in summary and summary[(kind, proto, r, t)]["cpu_us_per_query"] is not None]
            if not pts:
                continue
            dash = ' stroke-dasharray="5,3"' if t in FLOORS else ""
            if len(pts) > 1:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[t]}" stroke-width="2"{dash}/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[t]}"/>')
        # What a balancer that pays the floor twice (client and backend side)
        # would cost, at the paced rates.
        pts = [(X(r), Y(2 * summary[(kind, proto, r, "floor")]["cpu_us_per_query"])) for r in numeric
               if (kind, proto, r, "floor") in summary
               and summary[(kind, proto, r, "floor")]["cpu_us_per_query"] is not None]
        if len(pts) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="#bbbbbb" stroke-width="1.5" '
                       'stroke-dasharray="2,3"/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#bbbbbb"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------

def parse_rates(text, what):
    if text.strip().lower() == "none":
        return []
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == FULL:
            out.append(FULL)
            continue
        try:
            v = int(part.replace("k", "000"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {part!r} is neither a rate nor 'full'")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{what}: rates must be positive")
        out.append(v)
    # numeric ascending, full last
    return sorted(set(r for r in out if r != FULL)) + ([FULL] if FULL in out else [])


def ensure_node_deps():
    if shutil.which("node") is None:
        raise BenchError("node (Node.js 18+) is needed for --kinds node")
    if not MNAME_MARKER.exists():
        log("node-mname missing: scripts/install-test-deps")
        r = subprocess.run([str(REPO / "scripts" / "install-test-deps")], cwd=REPO, timeout=600)
        if r.returncode != 0 or not MNAME_MARKER.exists():
            raise BenchError("scripts/install-test-deps failed: node-mname is not installed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="quick check: 1 round of 2 s, UDP at 2k and full speed, TCP at full speed")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per rate (default 3; smoke 1)")
    ap.add_argument("--seconds", type=int, help="dnsperf -l per run (default 5; smoke 2)")
    ap.add_argument("--kinds", default="demo,node", help="backend kinds: demo, node or both (default demo,node)")
    ap.add_argument("--rates", help="UDP offered rates in q/s, comma-separated, 'full' for unpaced "
                                     "(default: demo 2000,15000,50000,100000,full; node 2000,8000,full)")
    ap.add_argument("--tcp-rates", help="TCP offered rates, or 'none' (default: demo 15000,full; node 2000,full)")
    ap.add_argument("--cpu", choices=["stat", "schedstat"], default="stat",
                    help="CPU source for the tables: /proc/PID/stat utime+stime (10 ms ticks, default) or "
                         "the threads' schedstat (ns); both are always recorded")
    ap.add_argument("--floor-proxy-yield", action="store_true",
                    help="also run the proxy floor with the balancer's yield after a split frame "
                         "(bench/floor_proxy.c -y), as one more UDP target")
    ap.add_argument("--floor-proxy-workers", action="store_true",
                    help="also run the proxy floor as a worker process per CPU, each pinned to its CPU with "
                         "SO_REUSEPORT sockets of its own (bench/floor_proxy.c -w N), as nginx runs; UDP and TCP")
    ap.add_argument("--floor-proxy-threads", action="store_true",
                    help="also run the proxy floor as blocking threads with no epoll, dnsdist's layout "
                         "(bench/floor_proxy.c -t), as one more UDP target")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo build --release --workspace --bins first")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results; smoke: bench/results/smoke)")
    args = ap.parse_args()
    if args.floor_proxy_yield:
        TARGETS.append("floor-proxy-yield")
        FLOORS.append("floor-proxy-yield")
    if args.floor_proxy_workers:
        TARGETS.append("floor-proxy-workers")
        FLOORS.append("floor-proxy-workers")
    if args.floor_proxy_threads:
        TARGETS.append("floor-proxy-threads")
        FLOORS.append("floor-proxy-threads")
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 3
    if args.seconds is None:
        args.seconds = 2 if args.smoke else 5
    if args.rounds < 1 or args.seconds < 1:
        ap.error("--rounds and --seconds must be at least 1")
    if args.out is None:
        args.out = REPO / "bench" / "results" / ("smoke" if args.smoke else "")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in DEFAULT_RATES for k in kinds):
        ap.error("--kinds takes demo, node or demo,node")
    try:
        udp_override = parse_rates(args.rates, "--rates") if args.rates else None
        tcp_override = parse_rates(args.tcp_rates, "--tcp-rates") if args.tcp_rates else None
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    plan = {}
    for k in kinds:
        udp = udp_override if udp_override is not None else DEFAULT_RATES[k]["udp"]
        tcp = tcp_override if tcp_override is not None else DEFAULT_RATES[k]["tcp"]
        if args.smoke:
            if udp_override is None:
                udp = [udp[0], FULL]
            if tcp_override is None:
                tcp = [FULL]
        plan[k] = {"udp": udp, "tcp": tcp}

    tmp = tempfile.mkdtemp(prefix="mname-curve-")
    curve = Curve(args, tmp)
    started = time.monotonic()

    def body():
        rb.ensure_tools()
        if "node" in kinds:
            ensure_node_deps()
        rb.build(args.no_build)
        curve.build_floor()
        env = rb.environment()
        if "node" in kinds:
            env["node"] = rb.cmd_output(["node", "--version"])
            env["node-mname"] = json.loads(MNAME_MARKER.read_text()).get("version", "?")
        log(f"{env['uname']}, {env['nproc']} CPUs ({env['cpu_model']}), load {env['loadavg_at_start']}")
        runs, pinnings = [], {}
        for kind in kinds:
            curve.start_kind(kind)
            pinnings[kind] = {"clients": curve.clients, **curve.pinning}
            log(f"{kind}: all targets answer ({time.monotonic() - started:.1f} s); clients {curve.clients}")
            for t in PROXIES:
                log(f"  pinning {t}: " + ", ".join(f"{c}->{b}" for c, b in curve.pinning[t].items()))
            for proto, rates in plan[kind].items():
                # The floor answers UDP only; the proxy floor relays TCP too.
                targets = TARGETS if proto == "udp" else PROXIES + [
                    t for t in ("floor-proxy", "floor-proxy-workers") if t in TARGETS]
                if rates and not args.smoke:
                    # Unmeasured: node-mname compiles its hot paths in its
                    # first thousands of queries, and each path (balancer
                    # socket, UDP, TCP) is its own, so the first target
                    # measured would pay for it.
                    for t in targets:
                        curve.load_run(kind, t, proto, rates[0], WARMUP_S, 0)
                    log(f"{kind} {proto}: warmed up ({WARMUP_S} s per target at {rate_label(rates[0])})")
                for rate in rates:
                    for rnd in range(1, args.rounds + 1):
                        # Each round starts with the next target, so no target
                        # always runs first (after a rate change) or after the
                        # same neighbour.
                        shift = (rnd - 1) % len(targets)
                        for t in targets[shift:] + targets[:shift]:
                            r = curve.load_run(kind, t, proto, rate, args.seconds, rnd)
                            runs.append(r)
                            log(f"{kind} {proto} {rate_label(rate):>8} r{rnd} {SHORT[t]:9s} "
                                f"{r['qps']:>9,.0f} q/s  lost {r['lost']:>5}  "
                                f"cpu {fmt(r['cpu_us_per_query'], '.2f')} us/q "
                                f"(stat {fmt(r['cpu_stat_us_per_query'], '.2f')}, "
                                f"schedstat {fmt(r['cpu_schedstat_us_per_query'], '.2f')})  "
                                f"backends {fmt(r['backends_cpu_us_per_query'], '.2f')} us/q  "
                                f"other {r['other_processes_cpu_s']:.2f} s")
                            for c in r["clients"]:
                                if c["problems"]:
                                    curve.note(f"{kind} {proto} {rate_label(rate)} r{rnd} {t} dnsperf {c['client']}: "
                                               f"{c['problems'][:3]}")
                            if r["other_processes_cpu_s"] > 0.05 * r["wall_s"]:
                                curve.note(f"{kind} {proto} {rate_label(rate)} r{rnd} {t}: other processes used "
                                           f"{r['other_processes_cpu_s']:.2f} CPU s during the run")
            curve.procs.kill_all()
        summary = summarize(runs)

        log("")
        for kind in kinds:
            log(f"{kind}: {KIND_DESC[kind]} (CPU: {args.cpu}; medians of {args.rounds} round(s) of {args.seconds} s)")
            log(curve_table(summary, kind, plan[kind]))
            log("")
        if curve.notes:
            log("Notes:")
            for n in curve.notes:
                log(f"- {n}")

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "curve.md").write_text(results_md(env, args, plan, summary, runs, curve, pinnings))
        (args.out / "curve.svg").write_text(svg_curve(summary, plan))
        (args.out / "curve.json").write_text(json.dumps({
            "environment": env,
            "parameters": {"smoke": args.smoke, "rounds": args.rounds, "seconds": args.seconds,
                           "cpu": args.cpu, "plan": plan, "ports": PORTS, "backend_ports": BACKEND_PORTS,
                           "dnsperf": {"processes": N_CLIENTS, "outstanding": DNSPERF_OUTSTANDING,
                                       "clients": DNSPERF_CLIENTS, "timeout": DNSPERF_TIMEOUT},
                           "dnsdist": peers.dnsdist_desc(), "nginx": peers.nginx_desc()},
            "pinning": pinnings,
            "summary": [{"kind": k, "proto": p, "rate": r, "target": t, **v}
                        for (k, p, r, t), v in summary.items()],
            "runs": runs, "notes": curve.notes,
        }, indent=1) + "\n")
        log(f"wrote {args.out}/curve.md, curve.svg, curve.json ({time.monotonic() - started:.0f} s in all)")
        return 0

    return rb.run_main(body, curve.procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
