"""Cached mode of bench/run.py (`bench/run.py --cached`, issue 13 point 5):
mname-balancer's packet cache against dnsdist's, on a realistic repeated
workload, in front of the demo backends and of real node-mname processes.

Why: a cache earns its keep on traffic where most queries repeat.  The
uncached benchmark asks 52 names, which any cache would answer forever; this
one asks a Zipf mix (bench/zipf.py: s = 1.0 over 10,000 names `hN.example.com
A`, answered by both backend kinds with TTL 60), so entries expire and are
fetched again, as in real traffic.  The goal (issue 13): queries/s at least
dnsdist-with-cache's, at most 1/3 of its CPU per query, hit rates reported.

Per backend kind (demo: three mname-demo-backend processes; node: three
node-mname processes, tests/interop/backend.js --port), the script starts the
backends and, in front of them:

  mname-balancer          AF_UNIX sockets, with --cache-size 100000 (default
                          --balancer-cache-flags), -S stats socket
  dnsdist                 plain ports, bench/peers.py plus newPacketCache as
                          dnsdist's documentation advises, console on loopback
  nginx-nocache           plain ports, bench/peers.py: nginx has no DNS cache,
                          a reference for what the caches buy
  floor                   bench/floor.c: one thread that sends each query
                          back with QR set (recvmmsg/sendmmsg), no parsing,
                          no backend: the least CPU per answer this machine
                          allows, what a cache hit cannot go below
  mname-balancer-nocache, dnsdist-nocache   (optional, --targets) the same
                          without a cache, on the same mix

Each target is first warmed for --warmup seconds (not measured), then loaded
in interleaved rounds (A B C A B C ...) by three dnsperf processes, one per
client address, each reading its own Zipf file (same mix, its own seed), at
full speed (-q 64 -c 2 -t 2, as bench/run.py).  Per run: queries/s completed,
CPU of the target and of the backends (schedstat or /proc/PID/stat), and the
cache counters' deltas over the run: the balancer's from its stats socket
(`summary`: counters cache_hits, cache_misses, cache_stale_* (stale
answers), cache_evictions, udp_forwarded; `cache` entries and bytes), dnsdist's from
its console (`dnsdist -c -e`: the pool cache's getStats() and the counter
`responses`, the answers it received from the backends).  Both are read
between runs, never during one.

Writes cached.md and cached.json to --out (bench/results/ by default,
bench/results/smoke/ for --smoke); bench/README.md ("Cached mode") explains
every column.  Standard library only.
"""

import base64
import json
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ from the imports below
import curve  # noqa: E402  (CpuMeter, ensure_node_deps)
import peers  # noqa: E402
import run as rb  # noqa: E402  (process, DNS and dnsperf helpers)
import zipf  # noqa: E402
from run import BenchError, log  # noqa: E402

REPO = rb.REPO
HOST = rb.HOST
NODE_BACKEND_JS = REPO / "tests" / "interop" / "backend.js"

# Ports of their own (bench/run.py's default mode has 15xxx, curve.py 16xxx).
BACKEND_PORTS = [17301, 17302, 17303]
PORTS = {
    "mname-balancer": 17400,
    "mname-balancer-nocache": 17401,
    "dnsdist": 17500,
    "dnsdist-nocache": 17501,
    "nginx-nocache": 17600,
    "floor": 17700,
}
DNSDIST_CONSOLE = {"dnsdist": 17598, "dnsdist-nocache": 17599}
ALL_TARGETS = list(PORTS)
DEFAULT_TARGETS = ["mname-balancer", "dnsdist", "nginx-nocache", "floor"]
LABELS = {
    "mname-balancer": "mname-balancer (cache)",
    "mname-balancer-nocache": "mname-balancer (no cache)",
    "dnsdist": "dnsdist (cache)",
    "dnsdist-nocache": "dnsdist (no cache)",
    "nginx-nocache": "nginx (no cache)",
    "floor": "floor (echo, bench/floor.c)",
}
KINDS = {
    "demo": "three mname-demo-backend processes",
    "node": "three node-mname processes (tests/interop/backend.js --port)",
}
CLIENTS = rb.CLIENTS            # 127.0.0.11..13, one dnsperf process each
READINESS_SRC = "127.0.0.2"     # readiness checks, never a load client

CACHE_ENTRIES = 100_000         # the balancer's --cache-size and dnsdist's maxEntries
DEFAULT_BALANCER_CACHE_FLAGS = f"--cache-size {CACHE_ENTRIES}"

DNSPERF_OUTSTANDING = rb.DNSPERF_OUTSTANDING
DNSPERF_CLIENTS = rb.DNSPERF_CLIENTS
DNSPERF_TIMEOUT = rb.DNSPERF_TIMEOUT


def add_arguments(ap):
    """bench/run.py's options for this mode."""
    g = ap.add_argument_group("cached mode (--cached; bench/README.md \"Cached mode\")")
    g.add_argument("--cached", action="store_true",
                   help="packet caches on a Zipf mix: mname-balancer --cache-size against dnsdist's "
                        "newPacketCache (writes cached.md, cached.json)")
    g.add_argument("--kinds", default="demo,node",
                   help="backend kinds: demo, node or demo,node (default demo,node)")
    g.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"targets, in this order (default {','.join(DEFAULT_TARGETS)}; "
                        f"any of {','.join(ALL_TARGETS)})")
    g.add_argument("--warmup", type=float, help="seconds of unmeasured load per target first (default 3; smoke 1)")
    g.add_argument("--tcp", action="store_true",
                   help="TCP rounds too, after the UDP rounds (the balancer's cache answers UDP only)")
    g.add_argument("--zipf-s", type=float, default=zipf.DEFAULT_S, help="Zipf exponent (default 1.0)")
    g.add_argument("--names", type=int, default=zipf.NAMES, help="distinct names (default 10000)")
    g.add_argument("--query-lines", type=int,
                   help="lines per client query file (default 1000000; smoke 200000)")
    g.add_argument("--seed", type=int, default=zipf.DEFAULT_SEED,
                   help="seed of the first client's file; client i uses seed+i (default 1)")
    g.add_argument("--balancer-cache-flags", default=DEFAULT_BALANCER_CACHE_FLAGS,
                   help=f"the cached balancer's cache flags (default {DEFAULT_BALANCER_CACHE_FLAGS!r})")
    g.add_argument("--dnsdist-dont-age", action="store_true",
                   help="dnsdist's cache with dontAge=true (its reference's advice in front of "
                        "authoritative servers) instead of the guide's dontAge=false")
    g.add_argument("--cpu", choices=["schedstat", "stat"], default="schedstat",
                   help="CPU source of the tables: the threads' schedstat (ns, default) or "
                        "/proc/PID/stat utime+stime (10 ms ticks); both are recorded")
    g.add_argument("--allow-nxdomain", action="store_true",
                   help="go on when a backend answers hN.example.com NXDOMAIN (a build without those names)")


# --------------------------------------------------------------------------
# Cache counters
# --------------------------------------------------------------------------

def balancer_summary(path, timeout=5.0):
    """The balancer's stats socket `summary` document (docs/stats.md)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"summary\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    doc = json.loads(buf)
    if "error" in doc:
        raise BenchError(f"stats socket {path}: {doc['error']}")
    return doc


def balancer_counters(path):
    """The counters this benchmark reads from the balancer, flat."""
    doc = balancer_summary(path)
    c = doc.get("counters", {})
    cache = doc.get("cache") or {}
    return {
        "has_cache_counters": "cache_hits" in c,
        "hits": c.get("cache_hits", 0), "misses": c.get("cache_misses", 0),
        # stale answers, whatever their reason (cache_stale_*)
        "stale": sum(v for k, v in c.items() if k.startswith("cache_stale")),
        "evictions": c.get("cache_evictions", 0),
        "to_backends": c.get("udp_forwarded", 0),
        "entries": cache.get("entries"), "bytes": cache.get("bytes"),
    }


def dnsdist_console(conf, lua, timeout=10):
    r = subprocess.run(["dnsdist", "-C", str(conf), "-c", "-e", lua],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"dnsdist console ({lua!r}) failed: {r.stdout}{r.stderr}")
    return r.stdout


# One console call: the pool cache's getStats() (entries, hits, misses,
# deferredLookups, ...) and the global counters `responses` (answers received
# from the backends) and `queries`, as "key=value" words.
DNSDIST_STATS_LUA = """
local t = {}
local s = getStatisticsCounters()
table.insert(t, "responses=" .. tostring(s["responses"]))
table.insert(t, "queries=" .. tostring(s["queries"]))
local pc = getPool(""):getCache()
if pc ~= nil then
  for k, v in pairs(pc:getStats()) do table.insert(t, "cache." .. k .. "=" .. tostring(v)) end
end
return table.concat(t, " ")
"""


def dnsdist_counters(conf, cached):
    """dnsdist's counters through its console (DNSDIST_STATS_LUA)."""
    out = dnsdist_console(conf, DNSDIST_STATS_LUA)
    kv = {k: int(float(v)) for k, v in re.findall(r"([\w.]+)=(-?[\d.]+)", out)}
    if "responses" not in kv:
        raise BenchError(f"dnsdist's console gave no counters:\n{out}")
    res = {"to_backends": kv["responses"], "queries": kv["queries"]}
    if cached:
        if "cache.hits" not in kv:
            raise BenchError(f"dnsdist's console gave no cache counters (no cache on the pool?):\n{out}")
        res.update({
            "has_cache_counters": True,
            "hits": kv["cache.hits"], "misses": kv["cache.misses"],
            "deferred_lookups": kv.get("cache.deferredLookups", 0),
            "deferred_inserts": kv.get("cache.deferredInserts", 0),
            "lookup_collisions": kv.get("cache.lookupCollisions", 0),
            "ttl_too_shorts": kv.get("cache.ttlTooShorts", 0),
            "entries": kv.get("cache.entries"),
        })
    return res


def counter_delta(before, after):
    out = {}
    for k, v in after.items():
        if k in ("entries", "bytes", "has_cache_counters"):
            out[k] = v
        elif isinstance(v, (int, float)) and isinstance(before.get(k), (int, float)):
            out[k] = v - before[k]
    return out


# --------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------

class CachedBench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.procs = rb.Procs()
        self.balancer_bin = args.bin_dir / "mname-balancer"
        self.backend_bin = args.bin_dir / "mname-demo-backend"
        self.key = base64.b64encode(os.urandom(32)).decode()   # dnsdist console key, this run only
        self.qfiles = []
        self.mix = []
        self.notes = []
        self.reset()

    def reset(self):
        self.backends = []
        self.targets = {}        # name -> Popen whose process tree is measured
        self.stats_paths = {}    # balancer target -> stats socket
        self.dnsdist_confs = {}  # dnsdist target -> conf (for its console)

    def note(self, msg):
        log(f"NOTE: {msg}")
        self.notes.append(msg)

    def write_queries(self):
        for i, _ in enumerate(CLIENTS):
            path = self.tmp / f"zipf-{i}.txt"
            d = zipf.write(path, self.args.query_lines, self.args.names, self.args.zipf_s, self.args.seed + i)
            self.qfiles.append(path)
            self.mix.append(d)
            log(f"query file {i}: {zipf.describe_text(d)}")

    def wait_ports_free(self):
        rb.wait_ports_free(BACKEND_PORTS + list(PORTS.values()) + list(DNSDIST_CONSOLE.values()))

    # ---- start everything ----

    def start_kind(self, kind):
        self.reset()
        self.wait_ports_free()
        sockdir = self.tmp / f"sockets-{kind}"
        sockdir.mkdir()
        for i, port in enumerate(BACKEND_PORTS):
            sock = sockdir / str(5300 + i)
            name = f"b{i + 1}"
            if kind == "demo":
                argv = [self.backend_bin, "-s", sock, "-n", name,
                        "--udp", f"{HOST}:{port}", "--tcp", f"{HOST}:{port}"]
            else:
                argv = ["node", NODE_BACKEND_JS, "--socket", sock, "--name", name,
                        "--port", port, "--address", HOST]
            self.backends.append(self.procs.start(f"{kind} backend {name}", argv,
                                                  self.tmp / f"{kind}-backend{i + 1}.log"))
        deadline = time.monotonic() + rb.READY_TIMEOUT
        for i, p in enumerate(self.backends):
            logpath = self.tmp / f"{kind}-backend{i + 1}.log"
            while b"backend ready" not in logpath.read_bytes():
                self.procs.check_alive(p)
                if time.monotonic() > deadline:
                    raise BenchError(f"{kind} backend b{i + 1} not ready:\n{rb.tail(logpath)}")
                time.sleep(0.02)
            rb.wait_answers(self.procs, p, f"{kind} backend b{i + 1}", BACKEND_PORTS[i], src=READINESS_SRC)
        self.check_mix_answers(kind)
        backends = [(HOST, port, f"b{i + 1}") for i, port in enumerate(BACKEND_PORTS)]
        for t in self.args.target_list:
            if t.startswith("mname-balancer"):
                self.start_balancer(kind, t, sockdir, cached=(t == "mname-balancer"))
            elif t.startswith("dnsdist"):
                self.start_dnsdist(kind, t, backends, cached=(t == "dnsdist"))
            elif t == "floor":
                self.start_floor(kind)
            else:
                self.start_nginx(kind, t, backends)

    def check_mix_answers(self, kind):
        """Both backend kinds must answer the mix's names (A 10.x.y.z)."""
        want = {0: "10.0.0.0", 9999: "10.0.39.15", 99999: "10.1.134.159"}
        for n, addr in want.items():
            try:
                rcode, ans = rb.dns_query(BACKEND_PORTS[0], zipf.name(n), "A", READINESS_SRC)
            except (OSError, ValueError) as e:
                rcode, ans = None, str(e)
            if rcode == 0 and ans == [addr]:
                continue
            msg = (f"{kind} backend b1 answers {zipf.name(n)} A with rcode {rcode} {ans}, not {addr}: "
                   "a backend build without the hN names")
            if not self.args.allow_nxdomain:
                raise BenchError(msg + " (--allow-nxdomain goes on anyway, measuring NXDOMAIN answers)")
            self.note(msg + "; going on (--allow-nxdomain)")
            return

    def start_balancer(self, kind, name, sockdir, cached):
        stats = self.tmp / f"{kind}-{name}.stats"
        flags = shlex.split(self.args.balancer_cache_flags) if cached else []
        logpath = self.tmp / f"{kind}-{name}.log"
        p = self.procs.start(name, [self.balancer_bin, "-b", HOST, "-p", PORTS[name], "-s", sockdir,
                                    "-l", "warn", "-S", stats] + flags, logpath)
        self.targets[name] = p
        self.stats_paths[name] = stats
        # Connected to every backend before its first query (a client is
        # pinned round-robin at its first query); the second balancer sees
        # the first one's connections too.
        want = 1 + sum(1 for t in self.stats_paths if t != name)
        paths = [str(sockdir / str(5300 + i)) for i in range(len(BACKEND_PORTS))]
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while not all(rb.unix_connections(path) >= want for path in paths):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not connect to all backends:\n{rb.tail(logpath)}")
            time.sleep(0.02)
        rb.wait_answers(self.procs, p, name, PORTS[name], src=READINESS_SRC)
        c = balancer_counters(stats)
        if cached and not c["has_cache_counters"]:
            self.note(f"{name}: the stats socket has no cache counters (a build without the cache, "
                      f"or --balancer-cache-flags {self.args.balancer_cache_flags!r} turned it off): "
                      "no hit rate")

    def start_dnsdist(self, kind, name, backends, cached):
        conf = self.tmp / f"{kind}-{name}.conf"
        conf.write_text(peers.dnsdist_conf(
            HOST, PORTS[name], backends, generated_by="bench/run.py --cached",
            cache_entries=CACHE_ENTRIES if cached else None, dont_age=self.args.dnsdist_dont_age,
            console=(f"{HOST}:{DNSDIST_CONSOLE[name]}", self.key)))
        r = subprocess.run(peers.dnsdist_check_argv(conf), capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"dnsdist rejects its configuration:\n{r.stdout}{r.stderr}")
        logpath = self.tmp / f"{kind}-{name}.log"
        p = self.procs.start(name, peers.dnsdist_argv(conf), logpath)
        self.targets[name] = p
        self.dnsdist_confs[name] = conf
        rb.wait_answers(self.procs, p, name, PORTS[name], src=READINESS_SRC)
        # The sticky policy hashes over the servers that are up: wait for
        # every backend's first health check.
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while logpath.read_text(errors="replace").count(" as 'up'") < len(BACKEND_PORTS):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not mark every backend up:\n{rb.tail(logpath)}")
            time.sleep(0.05)
        dnsdist_counters(conf, cached)  # the console answers

    def start_nginx(self, kind, name, backends):
        ngdir = self.tmp / f"{kind}-{name}"
        ngdir.mkdir()
        conf = ngdir / "nginx.conf"
        conf.write_text(peers.nginx_conf(HOST, PORTS[name], backends, ngdir,
                                         generated_by="bench/run.py --cached"))
        p = self.procs.start(name, peers.nginx_argv(conf, ngdir), self.tmp / f"{kind}-{name}.log")
        self.targets[name] = p
        rb.wait_answers(self.procs, p, name, PORTS[name], src=READINESS_SRC)

    def start_floor(self, kind):
        floor_bin = self.tmp / "floor"
        if not floor_bin.exists():
            cc = shutil.which("cc") or shutil.which("gcc")
            if cc is None:
                raise BenchError("no C compiler (cc) to build bench/floor.c: apt-get install gcc")
            r = subprocess.run([cc, "-O2", "-Wall", "-o", str(floor_bin), str(curve.FLOOR_C)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise BenchError(f"cc bench/floor.c failed:\n{r.stdout}{r.stderr}")
        logpath = self.tmp / f"{kind}-floor.log"
        p = self.procs.start("floor", [floor_bin, HOST, PORTS["floor"]], logpath)
        self.targets["floor"] = p
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while not curve.floor_answers(PORTS["floor"]):
            self.procs.check_alive(p)
            if time.monotonic() > deadline:
                raise BenchError(f"the floor does not answer:\n{rb.tail(logpath)}")
            time.sleep(0.05)

    def check_all_alive(self):
        for p in self.backends + list(self.targets.values()):
            self.procs.check_alive(p)

    # ---- measurement ----

    def counters(self, target):
        if target in self.stats_paths:
            return balancer_counters(self.stats_paths[target])
        if target in self.dnsdist_confs:
            return dnsdist_counters(self.dnsdist_confs[target], cached=(target == "dnsdist"))
        return None

    def dnsperf(self, target, proto, seconds, tag):
        """Three dnsperf processes, one per client address and query file;
        waits for them (bounded) and returns [(Popen, output path, client)]."""
        runs = []
        for i, src in enumerate(CLIENTS):
            out = self.tmp / f"dnsperf-{tag}-{i}.out"
            argv = ["dnsperf", "-s", HOST, "-p", str(PORTS[target]), "-d", str(self.qfiles[i]),
                    "-a", src, "-l", str(seconds), "-q", str(DNSPERF_OUTSTANDING),
                    "-c", str(DNSPERF_CLIENTS), "-t", str(DNSPERF_TIMEOUT)]
            if proto == "tcp":
                argv += ["-m", "tcp"]
            runs.append((self.procs.start(f"dnsperf {src}", argv, out), out, src))
        try:
            for p, _, _ in runs:
                # bounded: dnsperf stops after -l and waits at most -t for answers
                p.wait(timeout=seconds + DNSPERF_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"dnsperf against {target} did not finish in time")
        for p, _, _ in runs:
            self.procs.forget(p)
        return runs

    def warm(self, kind, target, proto):
        secs = max(1, round(self.args.warmup))
        self.dnsperf(target, proto, secs, f"{kind}-{target}-{proto}-warmup")
        self.check_all_alive()

    def load_run(self, kind, target, proto, seconds, rnd):
        c0 = self.counters(target)
        ppids = rb.all_ppids()
        ours = set(rb.descendants(os.getpid(), ppids))
        before_all = rb.all_proc_ticks()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        tmeter = curve.CpuMeter([self.targets[target].pid])
        bmeter = curve.CpuMeter([b.pid for b in self.backends])
        t0 = time.monotonic()
        runs = self.dnsperf(target, proto, seconds, f"{kind}-{target}-{proto}-{rnd}")
        wall = time.monotonic() - t0
        t_stat, t_sched = tmeter.stop()
        b_stat, b_sched = bmeter.stop()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        after_all = rb.all_proc_ticks()
        ours.update(rb.descendants(os.getpid(), rb.all_ppids()))
        other = sum(after_all[p] - before_all.get(p, after_all[p]) for p in set(after_all) - ours) / rb.CLK_TCK
        c1 = self.counters(target)

        clients = rb.read_dnsperf_runs(runs, target)
        self.check_all_alive()
        completed = sum(c["completed"] for c in clients)
        sent = sum(c["sent"] for c in clients)
        lost = sum(c["lost"] for c in clients)
        t_cpu = t_sched if self.args.cpu == "schedstat" else t_stat
        b_cpu = b_sched if self.args.cpu == "schedstat" else b_stat
        cache = counter_delta(c0, c1) if c0 is not None else None

        def per_q(x):
            return 1e6 * x / completed if completed else None
        lat = (sum(c["avg_latency_s"] * c["completed"] for c in clients if c["avg_latency_s"] is not None)
               / completed if completed else None)
        return {
            "kind": kind, "target": target, "proto": proto, "round": rnd,
            "seconds": seconds, "wall_s": wall,
            "sent": sent, "completed": completed, "lost": lost,
            "loss_pct": 100.0 * lost / sent if sent else None,
            "qps": sum(c["qps"] or 0 for c in clients),
            "avg_latency_ms": 1000 * lat if lat is not None else None,
            "cpu_s": t_cpu, "cpu_us_per_query": per_q(t_cpu),
            "cpu_stat_us_per_query": per_q(t_stat), "cpu_schedstat_us_per_query": per_q(t_sched),
            "backends_cpu_s": b_cpu, "backends_cpu_us_per_query": per_q(b_cpu),
            "backends_cpu_stat_us_per_query": per_q(b_stat),
            "backends_cpu_schedstat_us_per_query": per_q(b_sched),
            "dnsperf_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "other_processes_cpu_s": other,
            "cache": cache,
            "hit_rate": hit_rate(cache),
            "to_backends_share": (cache["to_backends"] / completed
                                  if cache and completed and proto == "udp" else None),
            "clients": clients,
        }


def hit_rate(cache):
    """Hits / lookups.  dnsdist counts a lookup that found its shard locked
    as a deferred lookup, neither hit nor miss: it is a miss here."""
    if not cache or not cache.get("has_cache_counters"):
        return None
    lookups = cache["hits"] + cache["misses"] + cache.get("deferred_lookups", 0)
    return cache["hits"] / lookups if lookups else None


# --------------------------------------------------------------------------
# Summaries and output
# --------------------------------------------------------------------------

def summarize(runs):
    """(kind, proto, target) -> medians over rounds; cache counters summed."""
    groups = {}
    for r in runs:
        groups.setdefault((r["kind"], r["proto"], r["target"]), []).append(r)
    summary = {}
    for key, rs in groups.items():
        sent = sum(r["sent"] for r in rs)
        lost = sum(r["lost"] for r in rs)
        completed = sum(r["completed"] for r in rs)

        def med(field):
            vals = [r[field] for r in rs if r[field] is not None]
            return statistics.median(vals) if vals else None
        caches = [r["cache"] for r in rs if r["cache"]]
        total = None
        if caches:
            total = {k: sum(c.get(k, 0) for c in caches)
                     for k in ("hits", "misses", "deferred_lookups", "stale", "evictions", "to_backends")}
            total["has_cache_counters"] = all(c.get("has_cache_counters") for c in caches)
            total["entries_end"] = caches[-1].get("entries")
            total["bytes_end"] = caches[-1].get("bytes")
        summary[key] = {
            "rounds": len(rs),
            "qps": med("qps"), "qps_min": min(r["qps"] for r in rs), "qps_max": max(r["qps"] for r in rs),
            "avg_latency_ms": med("avg_latency_ms"),
            "cpu_us_per_query": med("cpu_us_per_query"),
            "cpu_stat_us_per_query": med("cpu_stat_us_per_query"),
            "cpu_schedstat_us_per_query": med("cpu_schedstat_us_per_query"),
            "backends_cpu_us_per_query": med("backends_cpu_us_per_query"),
            "sent": sent, "lost": lost, "loss_pct": 100.0 * lost / sent if sent else None,
            "cache": total,
            "hit_rate": hit_rate(total),
            "to_backends_share": (total["to_backends"] / completed
                                  if total and completed and key[1] == "udp" else None),
        }
    return summary


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def pct(v):
    return "-" if v is None else f"{100 * v:.2f} %"


def main_table(summary, kind, proto, targets):
    headers = ["target", "q/s (median)", "q/s min-max", "avg lat ms", "loss %", "CPU us/q",
               "backends us/q", "hit rate", "to backends", "entries at end"]
    rows = []
    for t in targets:
        s = summary.get((kind, proto, t))
        if not s:
            continue
        c = s["cache"] or {}
        rows.append([
            LABELS[t], f"{s['qps']:,.0f}", f"{s['qps_min'] / 1000:,.1f}k-{s['qps_max'] / 1000:,.1f}k",
            fmt(s["avg_latency_ms"], ".3f"), fmt(s["loss_pct"], ".3f"),
            fmt(s["cpu_us_per_query"], ".2f"), fmt(s["backends_cpu_us_per_query"], ".2f"),
            pct(s["hit_rate"]), pct(s["to_backends_share"]),
            fmt(c.get("entries_end"), ",") if c else "-",
        ])
    return rb.fmt_table(headers, rows)


def goal_lines(summary, kind, proto):
    """Issue 13's goal, balancer (cache) against dnsdist (cache)."""
    b = summary.get((kind, proto, "mname-balancer"))
    d = summary.get((kind, proto, "dnsdist"))
    if not b or not d or not d["qps"] or not d["cpu_us_per_query"] or b["cpu_us_per_query"] is None:
        return []
    q = b["qps"] / d["qps"]
    c = b["cpu_us_per_query"] / d["cpu_us_per_query"]
    lines = [f"balancer / dnsdist, both cached: q/s x{q:.2f} (goal: at least 1: "
             f"{'met' if q >= 1 else 'NOT met'}); CPU per query x{c:.2f} (goal: at most 0.33: "
             f"{'met' if c <= 1 / 3 else 'NOT met'}); hit rates {pct(b['hit_rate'])} and {pct(d['hit_rate'])}"]
    f = summary.get((kind, proto, "floor"))
    if f and f["cpu_us_per_query"]:
        lines.append(f"the floor (an echo, no parsing, no backend) spends {f['cpu_us_per_query']:.2f} us/q: "
                     f"x{f['cpu_us_per_query'] / d['cpu_us_per_query']:.2f} dnsdist's; the balancer spends "
                     f"x{b['cpu_us_per_query'] / f['cpu_us_per_query']:.2f} the floor's")
    return lines


def cache_table(summary, kinds, protos, targets):
    headers = ["kind", "proto", "target", "hits", "misses", "deferred lookups", "stale answers",
               "evictions", "to backends", "hit rate"]
    rows = []
    for kind in kinds:
        for proto in protos:
            for t in targets:
                s = summary.get((kind, proto, t))
                if not s or not s["cache"]:
                    continue
                c = s["cache"]
                if not c.get("has_cache_counters"):
                    rows.append([kind, proto, LABELS[t], "-", "-", "-", "-", "-",
                                 f"{c['to_backends']:,}" if proto == "udp" or t.startswith("dnsdist") else "-",
                                 "-"])
                    continue
                rows.append([kind, proto, LABELS[t], f"{c['hits']:,}", f"{c['misses']:,}",
                             f"{c['deferred_lookups']:,}" if t.startswith("dnsdist") else "-",
                             f"{c['stale']:,}" if t.startswith("mname") else "-",
                             f"{c['evictions']:,}" if t.startswith("mname") else "-",
                             f"{c['to_backends']:,}" if proto == "udp" or t.startswith("dnsdist") else "-",
                             pct(s["hit_rate"])])
    return rb.fmt_table(headers, rows)


def results_md(env, args, kinds, protos, summary, runs, bench):
    v = env["versions"]
    lines = [
        "# mname-balancer benchmark results: cached mode (Zipf mix)",
        "",
        f"- date: {env['date']}" + (" (smoke run)" if args.smoke else ""),
        f"- system: {env['uname']}, nproc {env['nproc']}, CPU: {env['cpu_model']}",
        f"- load average at start: {env['loadavg_at_start']}",
        f"- versions: mname-balancer {v['mname-balancer']} (binaries: {env['bin_dir']}), {v['dnsdist']}, "
        f"{v['nginx']}, dnsperf {v['dnsperf']}, Python {v['python']}"
        + (f", node {env['node']}, node-mname {env['node-mname']}" if "node" in env else ""),
        f"- mix: {zipf.describe_text(bench.mix[0])}; each client reads its own file (seeds "
        f"{', '.join(str(d['seed']) for d in bench.mix)})",
        f"- load: {len(CLIENTS)} dnsperf processes (-a {', '.join(CLIENTS)}), each -l {args.seconds} "
        f"-q {DNSPERF_OUTSTANDING} -c {DNSPERF_CLIENTS} -t {DNSPERF_TIMEOUT}, unpaced; "
        f"{args.rounds} interleaved round(s) after a {args.warmup:g} s warm-up per target; CPU: {args.cpu}",
        f"- mname-balancer (cache): `-l warn -S PATH {args.balancer_cache_flags}`; (no cache): `-l warn -S PATH`",
        f"- dnsdist (cache): {peers.dnsdist_desc(cache_entries=CACHE_ENTRIES, dont_age=args.dnsdist_dont_age)}; "
        "console on loopback for the counters",
        f"- nginx (no cache): {peers.nginx_desc()}",
    ]
    for kind in kinds:
        for proto in protos:
            lines += ["", f"## {kind} backends ({KINDS[kind]}), {proto.upper()}", "",
                      main_table(summary, kind, proto, args.target_list)]
            goal = goal_lines(summary, kind, proto)
            if goal:
                lines += [""] + goal
    lines += ["", "## Cache counters (summed over the rounds)", "",
              cache_table(summary, kinds, protos, args.target_list)]
    lines += ["", "## Per-round numbers", "",
              rb.fmt_table(["kind", "proto", "round", "target", "q/s", "lost", "CPU us/q (stat)",
                            "CPU us/q (schedstat)", "backends us/q", "hit rate", "to backends",
                            "dnsperf CPU s", "other procs CPU s"],
                           [[r["kind"], r["proto"], r["round"], LABELS[r["target"]], f"{r['qps']:,.0f}",
                             r["lost"], fmt(r["cpu_stat_us_per_query"], ".2f"),
                             fmt(r["cpu_schedstat_us_per_query"], ".2f"),
                             fmt(r["backends_cpu_us_per_query"], ".2f"), pct(r["hit_rate"]),
                             pct(r["to_backends_share"]), f"{r['dnsperf_cpu_s']:.2f}",
                             f"{r['other_processes_cpu_s']:.2f}"] for r in runs])]
    if bench.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in bench.notes]
    lines += ["", "Columns are explained in bench/README.md (\"Cached mode\"). Raw numbers: cached.json.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------

def main(args):
    """Run the cached mode with bench/run.py's parsed arguments."""
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.kind_list or any(k not in KINDS for k in args.kind_list):
        raise SystemExit("--kinds takes demo, node or demo,node")
    if not args.target_list or any(t not in PORTS for t in args.target_list) \
            or len(set(args.target_list)) != len(args.target_list):
        raise SystemExit(f"--targets takes distinct names among {','.join(ALL_TARGETS)}")
    if args.warmup is None:
        args.warmup = 1 if args.smoke else 3
    if args.query_lines is None:
        args.query_lines = 200_000 if args.smoke else zipf.DEFAULT_LINES
    if not 1 <= args.names <= 100_000 or args.query_lines < 1 or args.zipf_s < 0 or args.warmup < 0:
        raise SystemExit("--names must be 1..100000, --query-lines at least 1, --zipf-s and --warmup not negative")
    protos = ["udp", "tcp"] if args.tcp else ["udp"]

    tmp = tempfile.mkdtemp(prefix="mname-bench-cached-")
    bench = CachedBench(args, tmp)
    started = time.monotonic()

    def body():
        rb.ensure_tools()
        if "node" in args.kind_list:
            curve.ensure_node_deps()
        build(args)
        env = rb.environment(args.bin_dir, args.bin_src)
        env["bin_dir"] = str(args.bin_dir)
        if "node" in args.kind_list:
            env["node"] = rb.cmd_output(["node", "--version"])
            env["node-mname"] = json.loads(curve.MNAME_MARKER.read_text()).get("version", "?")
        log(f"{env['uname']}, {env['nproc']} CPUs ({env['cpu_model']}), load {env['loadavg_at_start']}")
        bench.write_queries()
        runs = []
        for kind in args.kind_list:
            bench.start_kind(kind)
            log(f"{kind}: all targets answer ({time.monotonic() - started:.1f} s)")
            for proto in protos:
                for t in args.target_list:
                    bench.warm(kind, t, proto)
                for rnd in range(1, args.rounds + 1):
                    for t in args.target_list:
                        r = bench.load_run(kind, t, proto, args.seconds, rnd)
                        runs.append(r)
                        log(f"{kind} {proto} r{rnd} {LABELS[t]:26s} {r['qps']:>9,.0f} q/s  lost {r['lost']:>5}  "
                            f"cpu {fmt(r['cpu_us_per_query'], '.2f')} us/q  "
                            f"backends {fmt(r['backends_cpu_us_per_query'], '.2f')} us/q  "
                            f"hit rate {pct(r['hit_rate'])}  to backends {pct(r['to_backends_share'])}  "
                            f"other {r['other_processes_cpu_s']:.2f} s")
                        for c in r["clients"]:
                            if c["problems"]:
                                bench.note(f"{kind} {proto} r{rnd} {t} dnsperf {c['client']}: {c['problems'][:3]}")
                        if r["other_processes_cpu_s"] > 0.05 * r["wall_s"]:
                            bench.note(f"{kind} {proto} r{rnd} {t}: other processes used "
                                       f"{r['other_processes_cpu_s']:.2f} CPU s during the run")
            for name in args.target_list:
                f = bench.tmp / f"{kind}-{name}.log"
                if name.startswith("mname") and f.exists() and f.read_text(errors="replace").strip():
                    lines = f.read_text(errors="replace").splitlines()
                    bench.note(f"{kind}: {name} logged {len(lines)} line(s) at warn or above; first: {lines[:2]}")
            bench.procs.kill_all()
        summary = summarize(runs)

        log("")
        for kind in args.kind_list:
            for proto in protos:
                log(f"{kind} backends, {proto.upper()} ({KINDS[kind]}; medians of {args.rounds} round(s) "
                    f"of {args.seconds} s; CPU: {args.cpu})")
                log(main_table(summary, kind, proto, args.target_list))
                for g in goal_lines(summary, kind, proto):
                    log(g)
                log("")
        if bench.notes:
            log("Notes:")
            for n in bench.notes:
                log(f"- {n}")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cached.md").write_text(results_md(env, args, args.kind_list, protos, summary, runs, bench))
        (args.out / "cached.json").write_text(json.dumps({
            "environment": env,
            "parameters": {
                "smoke": args.smoke, "rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup,
                "kinds": args.kind_list, "targets": args.target_list, "protocols": protos, "cpu": args.cpu,
                "clients": CLIENTS, "ports": PORTS, "backend_ports": BACKEND_PORTS,
                "dnsperf": {"outstanding": DNSPERF_OUTSTANDING, "clients": DNSPERF_CLIENTS,
                            "timeout": DNSPERF_TIMEOUT},
                "balancer_cache_flags": args.balancer_cache_flags,
                "dnsdist": peers.dnsdist_desc(cache_entries=CACHE_ENTRIES, dont_age=args.dnsdist_dont_age),
                "nginx": peers.nginx_desc(), "mix": bench.mix,
            },
            "summary": [{"kind": k, "proto": p, "target": t, **v} for (k, p, t), v in summary.items()],
            "runs": runs, "notes": bench.notes,
        }, indent=1) + "\n")
        log(f"wrote {args.out}/cached.md, cached.json ({time.monotonic() - started:.0f} s in all)")
        return 0

    return rb.run_main(body, bench.procs, tmp)


def build(args):
    """cargo build this tree's release binaries, unless --no-build or --bin-dir
    points elsewhere; then check that the binaries are there."""
    default = (REPO / "target" / "release").resolve()
    if not args.no_build and args.bin_dir.resolve() == default:
        log("cargo build --release --workspace --bins")
        r = subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=REPO)
        if r.returncode != 0:
            raise BenchError("cargo build failed (use --no-build to bench the binaries already built)")
    for b in ("mname-balancer", "mname-demo-backend"):
        if not (args.bin_dir / b).exists():
            raise BenchError(f"{args.bin_dir / b} not found: build with cargo build --release --workspace --bins")
