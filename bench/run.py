#!/usr/bin/env python3
"""Throughput, CPU and latency benchmark: mname-balancer against dnsdist and nginx.

One run starts three demo backends and, in front of them, mname-balancer
(AF_UNIX sockets), dnsdist and nginx (the same backends' plain DNS ports, each
peer configured as its documentation advises for throughput: bench/peers.py), then
loads each target with dnsperf from three client addresses, UDP then TCP, in
interleaved rounds (direct, balancer, dnsdist, nginx, direct, ...), measures the
target's CPU from /proc, and finishes with a latency run at half load.

    bench/run.py            # R=3 rounds of 10 s, UDP and TCP (about 5 minutes)
    bench/run.py --smoke    # R=1 round of 3 s, UDP only (under a minute)

`bench/run.py --cached` is another mode (bench/cached.py): the balancer's
packet cache against dnsdist's, on a Zipf mix over 10,000 names, in front of
the demo backends and of node-mname; it writes cached.md, not results.md.
`--bin-dir DIR` takes the binaries from DIR (e.g. a build of a git worktree)
instead of building this tree's target/release.

Standard library only.  See bench/README.md for what each number means.
"""

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ from the imports below
import peers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BALANCER_BIN = REPO / "target" / "release" / "mname-balancer"
BACKEND_BIN = REPO / "target" / "release" / "mname-demo-backend"
NGINX_STREAM_SO = peers.NGINX_STREAM_SO

HOST = "127.0.0.1"
BACKEND_PORTS = [15301, 15302, 15303]
BALANCER_PORT = 15400
DNSDIST_PORT = 15500
NGINX_PORT = 15600
CLIENTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
TARGETS = ["direct", "mname-balancer", "dnsdist", "nginx"]
PORTS = {
    "direct": BACKEND_PORTS[0],
    "mname-balancer": BALANCER_PORT,
    "dnsdist": DNSDIST_PORT,
    "nginx": NGINX_PORT,
}
# --baseline BIN: a second balancer binary (an earlier build), measured
# side by side with the current one in the same rounds.
BASELINE_PORT = 15401
BASELINE_BIN = None
READY_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# dnsperf load parameters, per process (three processes, one per client address).
DNSPERF_OUTSTANDING = 64
DNSPERF_CLIENTS = 2
DNSPERF_TIMEOUT = 2


def log(msg):
    print(msg, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Processes: every one we start is recorded and killed by PID in cleanup.
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # Dies with us even if we are SIGKILLed (our own cleanup cannot run then).
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def all_ppids():
    """pid -> ppid for every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()
        out[int(name)] = int(rest[1])
    return out


def descendants(pid, ppids=None):
    """pid and all its descendants."""
    if ppids is None:
        ppids = all_ppids()
    children = {}
    for p, pp in ppids.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # Fields 14 and 15 of stat(5); rest[0] is field 3 (state).
    return int(rest[11]) + int(rest[12])


def all_proc_ticks():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            t = proc_ticks(name)
            if t is not None:
                out[int(name)] = t
    return out


def machine_busy_ticks():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


class Procs:
    def __init__(self):
        self.procs = []  # (name, Popen, logpath)

    def start(self, name, argv, logpath, stdout=None):
        out = open(logpath, "wb") if stdout is None else stdout
        try:
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if stdout is None else out,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        finally:
            if stdout is None:
                out.close()
        self.procs.append((name, p, logpath))
        return p

    def forget(self, p):
        self.procs = [e for e in self.procs if e[1] is not p]

    def check_alive(self, p):
        if p.poll() is not None:
            for name, q, path in self.procs:
                if q is p:
                    raise BenchError(f"{name} (pid {p.pid}) exited with {p.returncode}:\n{tail(path)}")

    def kill_all(self):
        """SIGTERM each process we started and its descendants, by PID; SIGKILL what is left."""
        if not self.procs:
            return
        ppids = all_ppids()
        victims = []
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                victims.extend(descendants(p.pid, ppids))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3.0
        for name, p, _ in self.procs:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name, p, _ in self.procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                log(f"warning: {name} (pid {p.pid}) did not exit")
        self.procs = []


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_main(body, procs, tmp):
    """Run a benchmark's main body and return its exit code, tearing down whatever happens.

    The one place for the end of every benchmark's main() (run.py, curve.py,
    cached.py, cache_memory.py), so their exit codes and teardown stay the same:
    SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt while body() runs;
    body()'s return value is the exit code; a BenchError logs `error: ...`
    and gives 1; an interrupt logs `interrupted` and gives 130.  Always, at
    the end, the three signals are ignored (a second Ctrl-C cannot cut the
    teardown short), the processes started through `procs` (a Procs) are
    killed, and the temp dir `tmp` is removed.
    """
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
    try:
        return body()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        procs.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# A tiny DNS client, for readiness checks and the pinning report.
# --------------------------------------------------------------------------

QTYPES = {"A": 1, "TXT": 16}


def dns_query_packet(name, qtype, qid):
    q = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\0" + struct.pack(">HH", QTYPES[qtype], 1)


def _skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def dns_parse(msg, qid):
    """(rcode, [answer strings]) of a response: A as dotted quad, TXT joined."""
    rid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not our answer")
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    answers = []
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        rdata = msg[i:i + rdlen]
        i += rdlen
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntoa(rdata))
        elif rtype == 16:
            parts, j = [], 0
            while j < len(rdata):
                parts.append(rdata[j + 1:j + 1 + rdata[j]].decode(errors="replace"))
                j += 1 + rdata[j]
            answers.append("".join(parts))
    return flags & 0xF, answers


_qid = [0x1234]


def dns_query(port, name, qtype, src, tcp=False, timeout=0.5):
    _qid[0] = (_qid[0] + 7919) & 0xFFFF
    qid = _qid[0]
    pkt = dns_query_packet(name, qtype, qid)
    if tcp:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.bind((src, 0))
            s.connect((HOST, port))
            s.sendall(struct.pack(">H", len(pkt)) + pkt)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            return dns_parse(buf[2:2 + struct.unpack(">H", buf[:2])[0]], qid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.sendto(pkt, (HOST, port))
        end = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.001, end - time.monotonic()))
            data = s.recv(65536)
            try:
                return dns_parse(data, qid)
            except (ValueError, struct.error, IndexError):
                continue


def answers_ok(port, src, tcp):
    try:
        rcode, ans = dns_query(port, "www.example.com", "A", src, tcp=tcp)
    except (OSError, ValueError, struct.error, IndexError):
        return False
    return rcode == 0 and ans == ["192.0.2.1"]


def whoami(port, src):
    for _ in range(5):
        try:
            rcode, ans = dns_query(port, "whoami.example.com", "TXT", src)
            if rcode == 0 and ans:
                return ans[0]
        except (OSError, ValueError, struct.error, IndexError):
            pass
    return "?"


def wait_answers(procs, proc, name, port, src=CLIENTS[0]):
    """Poll until the target answers www.example.com A correctly over UDP and TCP."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        procs.check_alive(proc)
        if answers_ok(port, src, False) and answers_ok(port, src, True):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{name} on port {port} did not answer within {READY_TIMEOUT:.0f} s")
        time.sleep(0.05)


def unix_connections(path):
    """Connected (accepted) sockets bound to this AF_UNIX path, from /proc/net/unix."""
    n = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path and parts[5] == "03":
                n += 1
    return n


def port_free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                # as servers do: connections in TIME_WAIT do not hold a port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def wait_ports_free(ports):
    """Wait (bounded) until every port in `ports` is free on HOST, UDP and
    TCP: the previous target's sockets may take a moment to go."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        busy = [p for p in ports if not port_free(p)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"ports {busy} on {HOST} (UDP or TCP) are in use")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------

def ensure_tools():
    need = {"dnsperf": "dnsperf", "dnsdist": "dnsdist", "nginx": "nginx"}
    missing = [cmd for cmd in need if shutil.which(cmd) is None]
    if not NGINX_STREAM_SO.exists():
        missing.append(str(NGINX_STREAM_SO))
    if not missing:
        return
    pkgs = ["dnsdist", "nginx", "libnginx-mod-stream", "dnsperf"]
    if os.geteuid() != 0:
        raise BenchError(f"missing: {', '.join(missing)}; install them with: "
                         f"sudo apt-get install -y {' '.join(pkgs)}")
    log(f"missing {', '.join(missing)}: apt-get install -y {' '.join(pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y"] + pkgs, env=env)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y"] + pkgs, env=env, check=True)
    still = [cmd for cmd in need if shutil.which(cmd) is None]
    if still or not NGINX_STREAM_SO.exists():
        raise BenchError(f"still missing after apt-get: {still or NGINX_STREAM_SO}")


def build(no_build):
    if not no_build and BALANCER_BIN.parent.resolve() == (REPO / "target" / "release").resolve():
        log("cargo build --release --workspace --bins")
        r = subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=REPO)
        if r.returncode != 0:
            raise BenchError("cargo build failed (use --no-build to bench the binaries already built)")
    for b in (BALANCER_BIN, BACKEND_BIN):
        if not b.exists():
            raise BenchError(f"{b} not found: run cargo build --release --workspace --bins")


def backend_list():
    """The backends as the peers' configurations take them: (host, port, name)."""
    return [(HOST, port, f"b{i + 1}") for i, port in enumerate(BACKEND_PORTS)]


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.procs = Procs()
        self.backends = []   # Popen
        self.targets = {}    # name -> Popen whose tree is measured
        self.pinning = {}    # target -> {client: backend name}
        self.notes = []
        self.dnsdist_policy = None
        self.qfile = self.tmp / "queries.txt"

    # ---- start everything ----

    def start_all(self):
        for port in BACKEND_PORTS + [BALANCER_PORT, BASELINE_PORT, DNSDIST_PORT, NGINX_PORT]:
            if not port_free(port):
                raise BenchError(f"port {HOST}:{port} (UDP or TCP) is already in use")
        names = ["www.example.com A"] + [f"a{i}.example.com A" for i in range(1, 51)] + ["whoami.example.com TXT"]
        self.qfile.write_text("\n".join(names) + "\n")
        self.start_backends()
        self.start_balancer("mname-balancer", BALANCER_BIN, BALANCER_PORT)
        if BASELINE_BIN is not None:
            self.start_balancer("baseline", BASELINE_BIN, BASELINE_PORT)
        self.start_dnsdist()
        self.start_nginx()
        self.targets["direct"] = self.backends[0]
        wait_answers(self.procs, self.backends[0], "direct", PORTS["direct"])
        for t in TARGETS:
            self.pinning[t] = {c: whoami(PORTS[t], c) for c in CLIENTS}
        for t in ("mname-balancer", "dnsdist", "nginx"):
            distinct = len(set(self.pinning[t].values()))
            if distinct < 3:
                self.note(f"{t}: the 3 client addresses are pinned to {distinct} backend(s): {self.pinning[t]}")

    def dnsdist_policy_desc(self):
        return peers.dnsdist_desc(policy=self.dnsdist_policy or "ffi")

    def note(self, msg):
        log(f"NOTE: {msg}")
        self.notes.append(msg)

    def start_backends(self):
        sockdir = self.tmp / "sockets"
        sockdir.mkdir()
        for i, port in enumerate(BACKEND_PORTS):
            sock = sockdir / str(5300 + i)
            p = self.procs.start(f"backend b{i + 1}", [
                BACKEND_BIN, "-s", sock, "-n", f"b{i + 1}",
                "--udp", f"{HOST}:{port}", "--tcp", f"{HOST}:{port}",
            ], self.tmp / f"backend{i + 1}.log")
            self.backends.append(p)
        deadline = time.monotonic() + READY_TIMEOUT
        for i, p in enumerate(self.backends):
            path = self.tmp / f"backend{i + 1}.log"
            while b"backend ready" not in path.read_bytes():
                self.procs.check_alive(p)
                if time.monotonic() > deadline:
                    raise BenchError(f"backend b{i + 1} not ready:\n{tail(path)}")
                time.sleep(0.02)
            wait_answers(self.procs, p, f"backend b{i + 1}", BACKEND_PORTS[i])

    def start_balancer(self, name, binary, port):
        sockdir = self.tmp / "sockets"
        log_path = self.tmp / f"{name}.log"
        p = self.procs.start(name, [
            binary, "-b", HOST, "-p", port, "-s", sockdir, "-l", "warn",
        ], log_path)
        self.targets[name] = p
        # Before any query (a query pins its client to a backend, round-robin
        # over the backends connected then), wait until the balancer holds a
        # connection to each backend socket.
        deadline = time.monotonic() + READY_TIMEOUT
        paths = [str(sockdir / str(5300 + i)) for i in range(len(BACKEND_PORTS))]
        want = 2 if name == "baseline" else 1
        while not all(unix_connections(path) >= want for path in paths):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not connect to all backends:\n{tail(log_path)}")
            time.sleep(0.02)
        wait_answers(self.procs, p, name, port)

    def start_dnsdist(self):
        conf = self.tmp / "dnsdist.conf"
        # "lua" is the old name of this option's sticky policy, kept so that
        # existing command lines work: it is now the per-thread FFI policy.
        want = "ffi" if self.args.dnsdist_policy == "lua" else self.args.dnsdist_policy
        if want in ("auto", "ffi"):
            conf.write_text(peers.dnsdist_conf(HOST, DNSDIST_PORT, backend_list(), policy="ffi",
                                               generated_by="bench/run.py"))
            r = subprocess.run(peers.dnsdist_check_argv(conf), capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                self.dnsdist_policy = "ffi"
            elif want == "ffi":
                raise BenchError(f"dnsdist rejects the FFI policy:\n{r.stdout}{r.stderr}")
            else:
                self.note(f"dnsdist rejects the FFI policy, using roundrobin: {(r.stdout + r.stderr).strip()}")
        if self.dnsdist_policy is None:
            conf.write_text(peers.dnsdist_conf(HOST, DNSDIST_PORT, backend_list(), policy="roundrobin",
                                               generated_by="bench/run.py"))
            self.dnsdist_policy = "roundrobin"
        p = self.procs.start("dnsdist", peers.dnsdist_argv(conf), self.tmp / "dnsdist.log")
        self.targets["dnsdist"] = p
        wait_answers(self.procs, p, "dnsdist", DNSDIST_PORT)
        if self.dnsdist_policy == "ffi":
            # The policy hashes over the servers that are up: wait for the
            # first health checks so that all three are.
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                seen = {c: whoami(DNSDIST_PORT, c) for c in CLIENTS}
                if all(x != "?" for x in seen.values()) and \
                        len(set(seen.values())) == len(BACKEND_PORTS):
                    break
                text = (self.tmp / "dnsdist.log").read_text(errors="replace")
                if len(re.findall(r"Marking downstream .* as 'up'", text)) >= 3:
                    break  # all up; the hash just does not spread these 3 addresses
                if time.monotonic() > deadline:
                    self.note("dnsdist: not all backends marked up before the deadline")
                    break
                time.sleep(0.1)
        else:
            self.note("dnsdist runs setServerPolicy(roundrobin): no client stickiness")

    def start_nginx(self):
        (self.tmp / "nginx").mkdir()
        conf = self.tmp / "nginx" / "nginx.conf"
        conf.write_text(peers.nginx_conf(HOST, NGINX_PORT, backend_list(), self.tmp / "nginx",
                                         generated_by="bench/run.py"))
        p = self.procs.start("nginx", peers.nginx_argv(conf, self.tmp / "nginx"), self.tmp / "nginx.log")
        self.targets["nginx"] = p
        wait_answers(self.procs, p, "nginx", NGINX_PORT)

    # ---- measurement ----

    def dnsperf_argv(self, port, seconds, proto, src, extra=()):
        argv = ["dnsperf", "-s", HOST, "-p", str(port), "-d", str(self.qfile),
                "-a", src, "-l", str(seconds), "-q", str(DNSPERF_OUTSTANDING),
                "-c", str(DNSPERF_CLIENTS), "-t", str(DNSPERF_TIMEOUT)]
        if proto == "tcp":
            argv += ["-m", "tcp"]
        return argv + list(extra)

    def check_all_alive(self):
        for p in self.backends + list(self.targets.values()):
            self.procs.check_alive(p)

    def load_run(self, target, proto, seconds, rnd):
        port = PORTS[target]
        tpid = self.targets[target].pid
        ppids = all_ppids()
        ours = set(descendants(os.getpid(), ppids))
        t_pids = set(descendants(tpid, ppids))
        b_pids = set()
        for b in self.backends:
            b_pids.update(descendants(b.pid, ppids))
        before = all_proc_ticks()
        busy0 = machine_busy_ticks()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        runs = []
        for i, src in enumerate(CLIENTS):
            out = self.tmp / f"dnsperf-{target}-{proto}-{rnd}-{i}.out"
            p = self.procs.start(f"dnsperf {src}", self.dnsperf_argv(port, seconds, proto, src), out)
            runs.append((p, out, src))
        for p, _, _ in runs:
            p.wait()
            self.procs.forget(p)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1 = machine_busy_ticks()
        after = all_proc_ticks()
        # Processes alive at the end that we started (nginx workers, ...).
        ppids = all_ppids()
        t_pids.update(descendants(tpid, ppids))
        for b in self.backends:
            b_pids.update(descendants(b.pid, ppids))
        ours.update(descendants(os.getpid(), ppids))

        def delta(pids):
            return sum(after.get(p, before.get(p, 0)) - before.get(p, 0) for p in pids) / CLK_TCK

        target_cpu = delta(t_pids)
        backends_cpu = delta(b_pids)
        others = set(after) - ours
        other_cpu = sum(after[p] - before.get(p, after[p]) for p in others) / CLK_TCK
        dnsperf_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)

        clients = read_dnsperf_runs(runs, target)
        self.check_all_alive()
        completed = sum(c["completed"] for c in clients)
        sent = sum(c["sent"] for c in clients)
        lost = sum(c["lost"] for c in clients)
        qps = sum(c["qps"] for c in clients)
        lat = sum(c["avg_latency_s"] * c["completed"] for c in clients) / completed if completed else None
        return {
            "target": target, "proto": proto, "round": rnd, "seconds": seconds,
            "sent": sent, "completed": completed, "lost": lost,
            "loss_pct": 100.0 * lost / sent if sent else None,
            "qps": qps, "avg_latency_ms": lat * 1000 if lat is not None else None,
            "cpu_s": target_cpu,
            "cpu_us_per_query": 1e6 * target_cpu / completed if completed else None,
            "backends_cpu_s": backends_cpu,
            "backends_cpu_us_per_query": 1e6 * backends_cpu / completed if completed else None,
            "dnsperf_cpu_s": dnsperf_cpu,
            "other_processes_cpu_s": other_cpu,
            "machine_busy_cpu_s": (busy1 - busy0) / CLK_TCK,
            "wall_s": wall, "clients": clients,
        }

    def half_load(self, target, rate, seconds):
        out = self.tmp / f"halfload-{target}.out"
        argv = self.dnsperf_argv(PORTS[target], seconds, "udp", CLIENTS[0], ["-Q", str(rate), "-v"])
        p = self.procs.start(f"dnsperf half-load {target}", argv, out)
        p.wait()
        self.procs.forget(p)
        lat, rcodes, summary_lines = [], {}, []
        with open(out, errors="replace") as f:
            for line in f:
                if line.startswith("> "):
                    parts = line.split()
                    rcodes[parts[1]] = rcodes.get(parts[1], 0) + 1
                    try:
                        lat.append(float(parts[-1]))
                    except ValueError:
                        pass
                elif not line.startswith("["):
                    summary_lines.append(line)
        st = parse_dnsperf("".join(summary_lines))
        if p.returncode != 0 or not lat:
            raise BenchError(f"half-load dnsperf against {target} failed (exit {p.returncode}):\n{tail(out)}")
        self.check_all_alive()
        lat.sort()
        return {
            "target": target, "rate": rate, "seconds": seconds,
            "achieved_qps": st.get("qps"), "sent": st.get("sent"), "completed": st.get("completed"),
            "lost": st.get("lost"), "answers_seen": len(lat), "rcodes": rcodes,
            "p50_ms": 1000 * percentile(lat, 50), "p90_ms": 1000 * percentile(lat, 90),
            "p99_ms": 1000 * percentile(lat, 99), "p999_ms": 1000 * percentile(lat, 99.9),
            "max_ms": 1000 * lat[-1],
        }

    def collect_logs(self):
        logs = {}
        for name, path in [("mname-balancer", "mname-balancer.log"), ("dnsdist", "dnsdist.log"),
                           ("nginx", "nginx.log"), ("nginx error.log", "nginx/error.log"),
                           ("backend b1", "backend1.log"), ("backend b2", "backend2.log"),
                           ("backend b3", "backend3.log")]:
            f = self.tmp / path
            if f.exists():
                lines = f.read_text(errors="replace").splitlines()
                logs[name] = {"lines": len(lines), "first": lines[:15], "last": lines[-5:]}
        return logs


def read_dnsperf_runs(runs, target):
    """The parsed output of finished dnsperf runs [(Popen, output path,
    client address)], one dict per client; BenchError if one failed."""
    clients = []
    for p, out, src in runs:
        text = out.read_text(errors="replace")
        st = parse_dnsperf(text)
        st["client"] = src
        st["exit"] = p.returncode
        st["problems"] = dnsperf_problems(text)
        if p.returncode != 0 or st.get("completed") is None:
            raise BenchError(f"dnsperf {src} against {target} failed (exit {p.returncode}):\n{text[-2000:]}")
        clients.append(st)
    return clients


def dnsperf_problems(text):
    """dnsperf's warnings, errors and timeouts, and any answer that is not NOERROR."""
    out = [line.strip() for line in text.splitlines()
           if line.startswith(("[Warning]", "[Error]", "[Fatal]", "[Timeout]", "Error", "Warning"))]
    m = re.search(r"Response codes:\s+(.*)", text)
    if m and not re.fullmatch(r"NOERROR \d+ \(100\.00%\)", m.group(1).strip()):
        out.append("response codes: " + m.group(1).strip())
    return out[:10]


def parse_dnsperf(text):
    def num(pattern, conv=float):
        m = re.search(pattern, text)
        return conv(m.group(1)) if m else None
    return {
        "sent": num(r"Queries sent:\s+(\d+)", int),
        "completed": num(r"Queries completed:\s+(\d+)", int),
        "lost": num(r"Queries lost:\s+(\d+)", int),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "avg_latency_s": num(r"Average Latency \(s\):\s+([\d.]+)"),
        "run_time_s": num(r"Run time \(s\):\s+([\d.]+)"),
        "rcodes": (re.search(r"Response codes:\s+(.*)", text) or [None, None])[1],
    }


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


# --------------------------------------------------------------------------
# Summaries and output
# --------------------------------------------------------------------------

def summarize(runs, protos):
    summary = {}
    for proto in protos:
        summary[proto] = {}
        for t in TARGETS:
            rs = [r for r in runs if r["proto"] == proto and r["target"] == t]
            if not rs:
                continue
            sent = sum(r["sent"] for r in rs)
            lost = sum(r["lost"] for r in rs)
            summary[proto][t] = {
                "rounds": len(rs),
                "qps_median": statistics.median(r["qps"] for r in rs),
                "qps_min": min(r["qps"] for r in rs),
                "qps_max": max(r["qps"] for r in rs),
                "avg_latency_ms_median": statistics.median(r["avg_latency_ms"] for r in rs),
                "loss_pct": 100.0 * lost / sent if sent else None,
                "lost": lost, "sent": sent,
                "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                "cpu_us_per_query_median": statistics.median(r["cpu_us_per_query"] for r in rs),
                "backends_cpu_s_median": statistics.median(r["backends_cpu_s"] for r in rs),
                "backends_cpu_us_per_query_median": statistics.median(r["backends_cpu_us_per_query"] for r in rs),
                "other_processes_cpu_s_max": max(r["other_processes_cpu_s"] for r in rs),
            }
        d = summary[proto].get("direct")
        for t, s in summary[proto].items():
            s["ratio_to_direct"] = s["qps_median"] / d["qps_median"] if d and d["qps_median"] else None
    return summary


def fmt_table(headers, rows, align=None):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    align = align or ["<"] + [">"] * (len(headers) - 1)

    def line(cells):
        return "| " + " | ".join(f"{str(c):{a}{w}}" for c, a, w in zip(cells, align, widths)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":" if a == ">" else "-" * (w + 2)) for a, w in zip(align, widths)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def throughput_table(summary, proto):
    headers = ["target", "qps (median)", "qps min-max", "avg lat ms", "loss %", "x direct",
               "CPU s", "CPU us/query", "backends us/query"]
    rows = []
    for t, s in summary[proto].items():
        rows.append([
            t, f"{s['qps_median']:,.0f}", f"{s['qps_min'] / 1000:,.0f}k-{s['qps_max'] / 1000:,.0f}k",
            f"{s['avg_latency_ms_median']:.3f}", f"{s['loss_pct']:.3f}",
            f"{s['ratio_to_direct']:.2f}" if s["ratio_to_direct"] is not None else "-",
            f"{s['cpu_s_median']:.2f}", f"{s['cpu_us_per_query_median']:.2f}",
            f"{s['backends_cpu_us_per_query_median']:.2f}",
        ])
    return fmt_table(headers, rows)


def halfload_table(half):
    headers = ["target", "-Q rate", "achieved qps", "lost", "p50 ms", "p90 ms", "p99 ms",
               "p99.9 ms", "added p99 ms"]
    direct = next((h for h in half if h["target"] == "direct"), None)
    rows = []
    for h in half:
        added = h["p99_ms"] - direct["p99_ms"] if direct else None
        short = h["achieved_qps"] is not None and h["achieved_qps"] < 0.95 * h["rate"]
        rows.append([
            h["target"], f"{h['rate']:,}",
            (f"{h['achieved_qps']:,.0f}" + (" (short)" if short else "")) if h["achieved_qps"] else "-",
            h["lost"], f"{h['p50_ms']:.3f}", f"{h['p90_ms']:.3f}", f"{h['p99_ms']:.3f}",
            f"{h['p999_ms']:.3f}", "-" if h["target"] == "direct" or added is None else f"{added:+.3f}",
        ])
    return fmt_table(headers, rows)


def cmd_output(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


def balancer_version(bin_dir, bin_src):
    """What the measured balancer was built from: `git describe` of bin_src
    (--bin-src), else of this tree when the binaries are its own target/release."""
    if bin_src is not None:
        return cmd_output(["git", "-C", str(bin_src), "describe", "--always", "--dirty"]) + f" ({bin_src})"
    if bin_dir is None or Path(bin_dir).resolve() == (REPO / "target" / "release").resolve():
        return cmd_output(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return f"unknown (binaries from {bin_dir}; --bin-src names their source tree)"


def environment(bin_dir=None, bin_src=None):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dnsperf_v = re.search(r"Version\s+(\S+)", cmd_output(["dnsperf", "-h"]))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "uname": cmd_output(["uname", "-sr"]),
        "nproc": cmd_output(["nproc"]),
        "cpu_model": cpu,
        "loadavg_at_start": open("/proc/loadavg").read().strip(),
        "versions": {
            "mname-balancer": balancer_version(bin_dir, bin_src),
            "dnsdist": cmd_output(["dnsdist", "--version"]).splitlines()[0],
            "nginx": cmd_output(["nginx", "-v"]),
            "dnsperf": dnsperf_v.group(1) if dnsperf_v else "unknown",
            "python": platform.python_version(),
        },
    }


def svg_bench(summary, protos):
    """Two grouped bar panels: qps per target, CPU us/query per target (UDP and TCP bars)."""
    W, PH, top_pad = 900, 300, 40
    H = top_pad + 2 * (PH + 70) + 20
    colors = {"udp": "#4C72B0", "tcp": "#DD8452"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
           'mname-balancer vs dnsdist vs nginx (dnsperf, 3 client addresses)</text>']
    # legend
    lx = W - 200
    for i, proto in enumerate(protos):
        out.append(f'<rect x="{lx + i * 90}" y="34" width="14" height="14" fill="{colors[proto]}"/>')
        out.append(f'<text x="{lx + i * 90 + 20}" y="46">{proto.upper()}</text>')

    def nice_scale(v):
        """(axis max, tick step) with 4 or 5 round steps covering v."""
        v = max(v, 1e-9)
        mag = 10 ** math.floor(math.log10(v / 5))
        for m in (1, 2, 2.5, 5, 10, 20):
            step = m * mag
            if step * 5 >= v:
                return step * math.ceil(v / step - 1e-9), step
        return v, v / 4

    def fmt_val(v, key):
        if key == "qps_median":
            return f"{v / 1000:.0f}k" if v >= 10000 else f"{v:.0f}"
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"

    def fmt_tick(v, step, key):
        if key == "qps_median":
            return f"{v / 1000:g}k" if v else "0"
        return f"{v:g}"

    panels = [("qps_median", "Throughput: median queries/second"),
              ("cpu_us_per_query_median", "Target CPU per query: median microseconds (direct = backend)")]
    for pi, (key, title) in enumerate(panels):
        y0 = top_pad + 30 + pi * (PH + 70)
        x0, plot_w = 80, W - 110
        vals = [summary[p][t][key] for p in protos for t in TARGETS if t in summary[p]]
        vmax, step = nice_scale(1.08 * max(vals) if vals else 1)  # room for the value labels
        out.append(f'<text x="{x0}" y="{y0 - 8}" font-size="14" font-weight="bold">{title}</text>')
        for k in range(int(round(vmax / step)) + 1):
            v = step * k
            y = y0 + PH - PH * v / vmax
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
                       f'{fmt_tick(v, step, key)}</text>')
        out.append(f'<line x1="{x0}" y1="{y0 + PH}" x2="{x0 + plot_w}" y2="{y0 + PH}" stroke="#333"/>')
        group_w = plot_w / len(TARGETS)
        bar_w = min(70, group_w * 0.7 / len(protos))
        for ti, t in enumerate(TARGETS):
            gx = x0 + ti * group_w + (group_w - bar_w * len(protos)) / 2
            for bi, proto in enumerate(protos):
                s = summary[proto].get(t)
                if not s:
                    continue
                v = s[key]
                h = PH * v / vmax
                x = gx + bi * bar_w
                out.append(f'<rect x="{x:.1f}" y="{y0 + PH - h:.1f}" width="{bar_w - 4:.1f}" '
                           f'height="{h:.1f}" fill="{colors[proto]}"/>')
                out.append(f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{y0 + PH - h - 4:.1f}" '
                           f'text-anchor="middle">{fmt_val(v, key)}</text>')
            out.append(f'<text x="{x0 + ti * group_w + group_w / 2:.1f}" y="{y0 + PH + 18}" '
                       f'text-anchor="middle" font-size="13">{t}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def results_md(env, args, protos, summary, half, bench, runs):
    v = env["versions"]
    lines = [
        "# mname-balancer benchmark results",
        "",
        f"- date: {env['date']}" + (" (smoke run)" if args.smoke else ""),
        f"- system: {env['uname']}, nproc {env['nproc']}, CPU: {env['cpu_model']}",
        f"- load average at start: {env['loadavg_at_start']}",
        f"- versions: mname-balancer {v['mname-balancer']}, {v['dnsdist']}, {v['nginx']}, "
        f"dnsperf {v['dnsperf']}, Python {v['python']}",
        f"- load: {len(CLIENTS)} dnsperf processes (-a {', '.join(CLIENTS)}), each "
        f"-l {args.seconds} -q {DNSPERF_OUTSTANDING} -c {DNSPERF_CLIENTS} -t {DNSPERF_TIMEOUT}; "
        f"{args.rounds} interleaved round(s) per protocol ({', '.join(protos)})",
        f"- dnsdist policy: {bench.dnsdist_policy_desc()}",
        f"- nginx: {peers.nginx_desc()}",
        "- client -> backend pinning seen before the load (whoami.example.com TXT):",
    ]
    for t in TARGETS:
        pins = ", ".join(f"{c} -> {b}" for c, b in bench.pinning.get(t, {}).items())
        lines.append(f"  - {t}: {pins}")
    for proto in protos:
        lines += ["", f"## {proto.upper()} throughput", "", throughput_table(summary, proto)]
    if half:
        lines += ["", f"## Latency at half load (UDP, one dnsperf -a {CLIENTS[0]}, "
                      f"-Q = half of mname-balancer's median UDP qps, {half[0]['seconds']} s, dnsperf -v)",
                  "", halfload_table(half)]
    lines += ["", "## Per-round numbers", "",
              fmt_table(["proto", "round", "target", "qps", "avg lat ms", "lost", "CPU s", "CPU us/q",
                         "backends CPU s", "backends us/q", "dnsperf CPU s", "other procs CPU s"],
                        [[r["proto"], r["round"], r["target"], f"{r['qps']:,.0f}",
                          f"{r['avg_latency_ms']:.3f}", r["lost"], f"{r['cpu_s']:.2f}",
                          f"{r['cpu_us_per_query']:.2f}", f"{r['backends_cpu_s']:.2f}",
                          f"{r['backends_cpu_us_per_query']:.2f}",
                          f"{r['dnsperf_cpu_s']:.2f}", f"{r['other_processes_cpu_s']:.2f}"] for r in runs])]
    if bench.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in bench.notes]
    lines += ["", "Columns are explained in bench/README.md. Raw numbers: results.json. Plot: bench.svg.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="quick check: 1 round of 3 s, UDP only (under a minute)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per protocol (default 3; smoke 1)")
    ap.add_argument("--seconds", type=int, help="dnsperf -l per run (default 10; smoke 3)")
    ap.add_argument("--half-load-seconds", type=int,
                    help="length of each half-load latency run (default 5; smoke 3)")
    ap.add_argument("--udp-only", action="store_true", help="skip the TCP rounds")
    ap.add_argument("--dnsdist-policy", choices=["auto", "ffi", "lua", "roundrobin"], default="auto",
                    help="auto: the sticky per-thread FFI policy (bench/peers.py) if dnsdist accepts it, "
                         "else roundrobin; ffi: that policy or fail; lua: old name of ffi")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build --release --workspace --bins first")
    ap.add_argument("--baseline", type=Path,
                    help="also measure this mname-balancer binary (an earlier build) as target 'baseline'")
    ap.add_argument("--out", type=Path,
                    help="results directory (default bench/results; smoke: bench/results/smoke)")
    ap.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release",
                    help="where mname-balancer and mname-demo-backend are (default: this tree's "
                         "target/release, built first unless --no-build; another directory is not built)")
    ap.add_argument("--bin-src", type=Path,
                    help="the git tree --bin-dir's binaries were built from (its `git describe` is recorded)")
    import cached  # bench/cached.py: the --cached mode and its options
    cached.add_arguments(ap)
    args = ap.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 3
    if args.seconds is None:
        args.seconds = 3 if args.smoke else 10
    if args.half_load_seconds is None:
        args.half_load_seconds = 3 if args.smoke else 5
    if args.out is None:
        args.out = REPO / "bench" / "results" / ("smoke" if args.smoke else "")
    if args.rounds < 1 or args.seconds < 1 or args.half_load_seconds < 1:
        ap.error("--rounds, --seconds and --half-load-seconds must be at least 1")
    args.bin_dir = args.bin_dir.resolve()
    if args.cached:
        return cached.main(args)
    global BALANCER_BIN, BACKEND_BIN
    BALANCER_BIN = args.bin_dir / "mname-balancer"
    BACKEND_BIN = args.bin_dir / "mname-demo-backend"
    protos = ["udp"] if (args.smoke or args.udp_only) else ["udp", "tcp"]
    if args.baseline is not None:
        global BASELINE_BIN
        BASELINE_BIN = args.baseline.resolve()
        TARGETS.insert(2, "baseline")
        PORTS["baseline"] = BASELINE_PORT

    tmp = tempfile.mkdtemp(prefix="mname-bench-")
    bench = Bench(args, tmp)
    started = time.monotonic()

    def body():
        ensure_tools()
        build(args.no_build)
        env = environment(args.bin_dir, args.bin_src)
        log(f"{env['uname']}, {env['nproc']} CPUs ({env['cpu_model']}), load {env['loadavg_at_start']}")
        bench.start_all()
        log(f"all targets answer ({time.monotonic() - started:.1f} s); dnsdist policy: {bench.dnsdist_policy}")
        for t in TARGETS:
            log(f"  pinning {t}: " + ", ".join(f"{c}->{b}" for c, b in bench.pinning[t].items()))

        runs = []
        for proto in protos:
            for rnd in range(1, args.rounds + 1):
                for t in TARGETS:
                    r = bench.load_run(t, proto, args.seconds, rnd)
                    runs.append(r)
                    log(f"{proto} round {rnd}/{args.rounds} {t:15s} {r['qps']:>10,.0f} qps  "
                        f"lat {r['avg_latency_ms']:.3f} ms  lost {r['lost']}  "
                        f"cpu {r['cpu_s']:.2f} s ({r['cpu_us_per_query']:.2f} us/q)  "
                        f"other procs {r['other_processes_cpu_s']:.2f} s")
                    for c in r["clients"]:
                        if c["problems"]:
                            bench.note(f"dnsperf {c['client']} -> {t} {proto} round {rnd}: {c['problems'][:3]}")
                    if r["lost"]:
                        bench.note(f"{t} {proto} round {rnd}: lost {r['lost']} of {r['sent']} queries")
                    if r["other_processes_cpu_s"] > 0.05 * r["wall_s"]:
                        bench.note(f"{t} {proto} round {rnd}: other processes on this machine used "
                                   f"{r['other_processes_cpu_s']:.2f} CPU s during the run")
        summary = summarize(runs, protos)

        rate = max(1, int(summary["udp"]["mname-balancer"]["qps_median"] / 2))
        half = []
        for t in TARGETS:
            h = bench.half_load(t, rate, args.half_load_seconds)
            half.append(h)
            log(f"half load {t:15s} -Q {rate}: p50 {h['p50_ms']:.3f} ms  p99 {h['p99_ms']:.3f} ms  "
                f"lost {h['lost']}")
            if h["lost"]:
                bench.note(f"half load {t}: lost {h['lost']} queries")
            if h["achieved_qps"] is not None and h["achieved_qps"] < 0.95 * rate:
                bench.note(f"half load {t}: reached only {h['achieved_qps']:,.0f} of the {rate:,} qps asked "
                           f"(one client with {DNSPERF_OUTSTANDING} queries outstanding): this target is "
                           "saturated at this rate, so its latency there includes queueing")

        logs = bench.collect_logs()
        bal_lines = logs.get("mname-balancer", {}).get("lines", 0)
        if bal_lines:
            bench.note(f"mname-balancer logged {bal_lines} line(s) at level warn or above; "
                       f"first: {logs['mname-balancer']['first'][:3]}")

        log("")
        log(f"dnsdist policy: {bench.dnsdist_policy_desc()}")
        for proto in protos:
            log(f"\n{proto.upper()} throughput ({args.rounds} round(s) of {args.seconds} s, medians)")
            log(throughput_table(summary, proto))
        log(f"\nLatency at half load (UDP, -Q {rate}, {args.half_load_seconds} s, one client {CLIENTS[0]})")
        log(halfload_table(half))
        if bench.notes:
            log("\nNotes:")
            for n in bench.notes:
                log(f"- {n}")

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(results_md(env, args, protos, summary, half, bench, runs))
        (args.out / "results.json").write_text(json.dumps({
            "environment": env,
            "parameters": {"smoke": args.smoke, "rounds": args.rounds, "seconds": args.seconds,
                           "half_load_seconds": args.half_load_seconds, "protocols": protos,
                           "clients": CLIENTS, "ports": PORTS,
                           "dnsperf": {"outstanding": DNSPERF_OUTSTANDING, "clients": DNSPERF_CLIENTS,
                                       "timeout": DNSPERF_TIMEOUT},
                           "dnsdist_policy": bench.dnsdist_policy},
            "pinning": bench.pinning,
            "runs": runs, "summary": summary, "half_load": half,
            "notes": bench.notes, "logs": logs,
        }, indent=1) + "\n")
        (args.out / "bench.svg").write_text(svg_bench(summary, protos))
        log(f"\nwrote {args.out}/results.md, results.json, bench.svg "
            f"({time.monotonic() - started:.0f} s in all)")
        return 0

    return run_main(body, bench.procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
