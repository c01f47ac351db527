#!/usr/bin/env python3
"""Memory per cache entry of mname-balancer's packet cache (issue 13).

How much memory does a cached answer cost?  The cache's own accounting
(`cache.bytes` in the stats socket's summary) counts what it knows about;
this script measures what the process really grows by, allocator and hash
table included, as an operator sizing --cache-size would see it.

It starts one mname-demo-backend and the release balancer in front of it
with `--cache-size 200000 --cache-max-bytes 1000000000` (room for every name
asked, so nothing is evicted) and a stats socket, warms it up (a second of
`www.example.com A` from each source address: remotes, buffers), reads the
balancer's VmRSS, then asks 100,000 distinct names `hN.example.com A`
(N = 0..99999; the demo backend answers each with one A record, TTL 60) in
two halves, each from four source addresses 127.0.0.21..24 with dnsperf
(one pass over each file, -n 1, bounded by -l and a deadline).  After each
half it reads the stats (`cache.entries`, `cache.bytes`, the cache counters)
and VmRSS.  It prints and writes to bench/results/cache_memory.md:

  - RSS growth / entries added, over the whole run: bytes per entry;
  - the same over the second half only (one-time growth, e.g. of the
    in-flight table under load, is in the first half);
  - cache.bytes / cache.entries: the cache's own count per entry.

The whole run takes well under a minute.  Entries must be ~100,000: the
script says so if queries were lost or answers were not cached (e.g. a
backend build without the hN names answers NXDOMAIN).

    bench/cache_memory.py                                   # this tree's target/release
    bench/cache_memory.py --bin-dir /tmp/benchtarget/release --bin-src /tmp/benchwt

Standard library only.  Every process is started in its own session and
killed by PID in a finally, as in bench/run.py.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ from the imports below
import cached  # noqa: E402  (balancer_summary)
import common  # noqa: E402  (rss_kib)
import run as rb  # noqa: E402  (Procs, DNS helpers, dnsperf parsing)
import zipf  # noqa: E402  (the names)
from run import BenchError, log  # noqa: E402

REPO = rb.REPO
HOST = rb.HOST
PORT = 17700
SOURCES = [f"127.0.0.{i}" for i in range(21, 25)]
READINESS_SRC = "127.0.0.2"
NAMES = 100_000
CACHE_FLAGS = ["--cache-size", "200000", "--cache-max-bytes", "1000000000"]
DNSPERF_LIMIT_S = 60      # dnsperf -l: the most one half may take


def summary(stats_path):
    doc = cached.balancer_summary(stats_path)
    c = doc.get("counters", {})
    cache = doc.get("cache") or {}
    return {"entries": cache.get("entries"), "bytes": cache.get("bytes"),
            "hits": c.get("cache_hits"), "misses": c.get("cache_misses"),
            "evictions": c.get("cache_evictions"), "udp_forwarded": c.get("udp_forwarded")}


class MemoryBench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.procs = rb.Procs()
        self.stats = self.tmp / "balancer.stats"
        self.balancer = None
        self.points = []   # (label, rss KiB, summary)
        self.runs = []
        self.notes = []

    def note(self, msg):
        log(f"NOTE: {msg}")
        self.notes.append(msg)

    def start(self):
        for port in (PORT,):
            if not rb.port_free(port):
                raise BenchError(f"port {HOST}:{port} (UDP or TCP) is in use")
        sockdir = self.tmp / "sockets"
        sockdir.mkdir()
        sock = sockdir / "5300"
        blog = self.tmp / "backend.log"
        backend = self.procs.start("backend", [self.args.bin_dir / "mname-demo-backend", "-s", sock, "-n", "b1"],
                                   blog)
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while b"backend ready" not in blog.read_bytes():
            self.procs.check_alive(backend)
            if time.monotonic() > deadline:
                raise BenchError(f"backend not ready:\n{rb.tail(blog)}")
            time.sleep(0.02)
        log_path = self.tmp / "balancer.log"
        self.balancer = self.procs.start("mname-balancer", [
            self.args.bin_dir / "mname-balancer", "-b", HOST, "-p", PORT, "-s", sockdir, "-l", "warn",
            "-S", self.stats] + CACHE_FLAGS, log_path)
        deadline = time.monotonic() + rb.READY_TIMEOUT
        while rb.unix_connections(str(sock)) < 1:
            self.procs.check_alive(self.balancer)
            if time.monotonic() > deadline:
                raise BenchError(f"mname-balancer did not connect to the backend:\n{rb.tail(log_path)}")
            time.sleep(0.02)
        rb.wait_answers(self.procs, self.balancer, "mname-balancer", PORT, src=READINESS_SRC)
        rcode, ans = rb.dns_query(PORT, zipf.name(7), "A", READINESS_SRC)
        if rcode != 0 or ans != ["10.0.0.7"]:
            raise BenchError(f"{zipf.name(7)} A through the balancer: rcode {rcode} {ans}, not 10.0.0.7 "
                             "(a backend build without the hN names?)")
        if summary(self.stats)["entries"] is None:
            raise BenchError("the stats summary has no `cache` object: a balancer build without the cache?")

    def dnsperf(self, files, tag, extra):
        procs = []
        for src, f in zip(SOURCES, files):
            out = self.tmp / f"dnsperf-{tag}-{src}.out"
            argv = ["dnsperf", "-s", HOST, "-p", str(PORT), "-a", src, "-d", str(f),
                    "-q", "32", "-c", "1", "-t", "2"] + extra
            procs.append((self.procs.start(f"dnsperf {src}", argv, out), out, src))
        results = []
        for p, out, src in procs:
            try:
                p.wait(timeout=DNSPERF_LIMIT_S + 30)
            except subprocess.TimeoutExpired:
                raise BenchError(f"dnsperf {src} ({tag}) did not finish in time")
            self.procs.forget(p)
            text = out.read_text(errors="replace")
            st = rb.parse_dnsperf(text)
            if p.returncode != 0 or st.get("completed") is None:
                raise BenchError(f"dnsperf {src} ({tag}) failed (exit {p.returncode}):\n{text[-2000:]}")
            st.update(client=src, tag=tag, problems=rb.dnsperf_problems(text))
            results.append(st)
            if st["problems"]:
                self.note(f"dnsperf {src} ({tag}): {st['problems'][:3]}")
        self.procs.check_alive(self.balancer)
        self.runs += results
        return results

    def point(self, label):
        rss = common.rss_kib(self.balancer.pid)
        s = summary(self.stats)
        self.points.append((label, rss, s))
        log(f"{label:28s} VmRSS {rss:>9,} KiB  cache entries {s['entries']:>7,}  cache bytes {s['bytes']:>12,}")
        return rss, s

    def run(self):
        self.start()
        www = self.tmp / "www.txt"
        www.write_text("www.example.com A\n")
        self.dnsperf([www] * len(SOURCES), "warm-up", ["-l", "1"])
        self.point("after warm-up")
        half = NAMES // 2
        for h, (lo, hi) in enumerate([(0, half), (half, NAMES)]):
            files = []
            for i, _ in enumerate(SOURCES):
                f = self.tmp / f"names-{h}-{i}.txt"
                f.write_text("".join(f"{zipf.name(n)} A\n" for n in range(lo + i, hi, len(SOURCES))))
                files.append(f)
            rs = self.dnsperf(files, f"h{lo}-h{hi - 1}", ["-n", "1", "-l", str(DNSPERF_LIMIT_S)])
            lost = sum(r["lost"] for r in rs)
            if lost:
                self.note(f"names h{lo}..h{hi - 1}: {lost} queries lost")
            self.point(f"after h{lo}..h{hi - 1}")


def report(bench, env):
    (_, rss0, s0), (_, rss1, s1), (_, rss2, s2) = bench.points
    added = s2["entries"] - s0["entries"]
    added2 = s2["entries"] - s1["entries"]

    def per(kib, n):
        return kib * 1024 / n if n else None
    res = {
        "entries_added": added,
        "rss_growth_kib": rss2 - rss0,
        "bytes_per_entry_rss": per(rss2 - rss0, added),
        "bytes_per_entry_rss_second_half": per(rss2 - rss1, added2),
        "bytes_per_entry_cache_accounting": s2["bytes"] / s2["entries"] if s2["entries"] else None,
    }
    if added < 0.99 * NAMES:
        bench.note(f"only {added:,} entries were added for {NAMES:,} names: lost queries, answers not cached, "
                   "or evictions (see the points below)")

    def f(v, spec=",.0f"):
        return "-" if v is None else format(v, spec)
    lines = [
        "# mname-balancer: memory per cache entry",
        "",
        f"- date: {env['date']}",
        f"- system: {env['uname']}, nproc {env['nproc']}, CPU: {env['cpu_model']}",
        f"- mname-balancer {env['version']} (binaries: {env['bin_dir']}), dnsperf {env['dnsperf']}",
        f"- balancer: `-l warn -S PATH {' '.join(CACHE_FLAGS)}`, one mname-demo-backend",
        f"- load: {NAMES:,} distinct names `hN.example.com A` (N = 0..{NAMES - 1}, one A record each, "
        f"TTL 60), in two halves, each from {len(SOURCES)} dnsperf processes (-a {', '.join(SOURCES)}, "
        "-n 1 -q 32 -c 1 -t 2), after a 1 s warm-up asking www.example.com A from each",
        "",
        "## Result",
        "",
        rb.fmt_table(["measure", "value"], [
            ["entries added", f"{added:,}"],
            ["VmRSS growth", f"{rss2 - rss0:,} KiB"],
            ["bytes per entry (VmRSS growth / entries added)", f(res["bytes_per_entry_rss"])],
            ["bytes per entry, second half only", f(res["bytes_per_entry_rss_second_half"])],
            ["bytes per entry, the cache's own count (cache.bytes / cache.entries)",
             f(res["bytes_per_entry_cache_accounting"])],
        ]),
        "",
        "## Points",
        "",
        rb.fmt_table(["point", "VmRSS KiB", "cache entries", "cache bytes", "hits", "misses", "evictions",
                      "udp_forwarded"],
                     [[label, f"{rss:,}", f(s["entries"], ","), f(s["bytes"], ","), f(s["hits"], ","),
                       f(s["misses"], ","), f(s["evictions"], ","), f(s["udp_forwarded"], ",")]
                      for label, rss, s in bench.points]),
        "",
        "## dnsperf",
        "",
        rb.fmt_table(["phase", "client", "sent", "completed", "lost", "q/s"],
                     [[r["tag"], r["client"], r["sent"], r["completed"], r["lost"], f(r["qps"])]
                      for r in bench.runs]),
    ]
    if bench.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in bench.notes]
    lines += ["", "Written by bench/cache_memory.py (its docstring says how to read it).", ""]
    return res, "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release",
                    help="where mname-balancer and mname-demo-backend are (default: this tree's target/release; "
                         "not built by this script)")
    ap.add_argument("--bin-src", type=Path,
                    help="the git tree --bin-dir's binaries were built from (its `git describe` is recorded)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                    help="directory for cache_memory.md (default bench/results)")
    args = ap.parse_args()
    args.bin_dir = args.bin_dir.resolve()
    for b in ("mname-balancer", "mname-demo-backend"):
        if not (args.bin_dir / b).exists():
            sys.exit(f"{args.bin_dir / b} not found: cargo build --release --workspace --bins")

    tmp = tempfile.mkdtemp(prefix="mname-cache-memory-")
    bench = MemoryBench(args, tmp)

    def body():
        rb.ensure_tools()
        e = rb.environment(args.bin_dir, args.bin_src)
        env = {"date": e["date"], "uname": e["uname"], "nproc": e["nproc"], "cpu_model": e["cpu_model"],
               "dnsperf": e["versions"]["dnsperf"], "bin_dir": str(args.bin_dir),
               "version": e["versions"]["mname-balancer"]}
        bench.run()
        res, md = report(bench, env)
        log("")
        log(md)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cache_memory.md").write_text(md)
        log(f"wrote {args.out}/cache_memory.md")
        print(json.dumps(res))
        return 0

    return rb.run_main(body, bench.procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
