#!/usr/bin/env python3
"""TCP exhaustion attacks against the balancer, with legitimate TCP clients
measured throughout: do they get answers, and does the balancer stay
bounded and come back to its baseline?

Three demo backends (release build) and the balancer on 127.0.0.1:15700
with its default TCP settings (--max-tcp-sessions 1000,
--max-tcp-per-client 100, --tcp-idle-timeout 10s, --tcp-read-timeout 5s).
Phases, each --seconds long, with a quiet --rest between them:

  baseline      legitimate clients only
  idle-1        20,000 connections from one address, opened and held silent
  idle-1000     20,000 connections from 1,000 addresses (20 each), held silent
  half-1000     20,000 from 1,000 addresses, each sending a length of 65,535
                and 10 bytes, then holding
  garbage-1000  20,000 from 1,000 addresses, each sending 200 random bytes

The balancer runs with --remote-expiry 30s (its only non-default flag),
so that the run can end by showing memory back at its start once the
attackers' remotes have expired.

The attacker opens its connections as fast as it can and holds every one
it opened until the phase ends (--connections to change the number).
Throughout, two kinds of legitimate client, from their own addresses:
a fresh connection per query every 20 ms, and one persistent connection
asking every 100 ms that reconnects (and asks again) when the balancer has
closed it, as RFC 7766 asks of clients.  A query counts as answered if
its answer arrives within 1 s of the first try.  Every 0.5 s the
balancer's RSS and open descriptors are sampled.

    python3 bench/tcp_attack.py [--seconds 15] [--rest 12] [--connections 20000]

Prints one line per phase and writes bench/results/tcp_attack.md (--out).
Loopback only; every process is stopped by its PID; every loop is bounded.
"""

import argparse
import errno
import os
import random
import resource
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TARGET = ("127.0.0.1", common.PORT)


def framed(msg):
    return struct.pack(">H", len(msg)) + msg


def recv_exact(s, n, deadline):
    out = b""
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        chunk = s.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def ask_tcp(s, qid, deadline):
    """One query on connected socket s; True if its answer came in time."""
    s.sendall(framed(common.query("www.example.com", qid)))
    while True:
        head = recv_exact(s, 2, deadline)
        if head is None:
            return False
        body = recv_exact(s, struct.unpack(">H", head)[0], deadline)
        if body is None:
            return False
        if struct.unpack(">H", body[:2])[0] == qid:
            return True


def connect(src, deadline):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(max(0.01, deadline - time.monotonic()))
    s.connect(TARGET)
    return s


class Legit:
    """The legitimate clients and what they got, phase by phase."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stats = {}
        self.phase = "start"
        self.stop = threading.Event()

    def count(self, kind, ok, latency):
        with self.lock:
            st = self.stats.setdefault((self.phase, kind), [0, 0, 0.0])
            st[0] += 1
            st[1] += int(ok)
            if ok:
                st[2] = max(st[2], latency)

    def fresh(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            src = f"127.0.3.{1 + n % 250}"
            start = time.monotonic()
            deadline = start + 1.0
            ok = False
            try:
                s = connect(src, deadline)
                ok = ask_tcp(s, n % 65536, deadline)
                s.close()
            except OSError:
                ok = False
            self.count("fresh", ok, time.monotonic() - start)
            time.sleep(0.02)

    def persistent(self):
        s = None
        n = 0
        while not self.stop.is_set():
            n += 1
            start = time.monotonic()
            deadline = start + 1.0
            ok = False
            for _ in range(3):
                try:
                    if s is None:
                        s = connect("127.0.4.1", deadline)
                    ok = ask_tcp(s, n % 65536, deadline)
                except OSError:
                    ok = False
                if ok or time.monotonic() >= deadline:
                    break
                # Closed by the balancer (idle, evicted): reconnect, ask again.
                if s is not None:
                    s.close()
                s = None
            self.count("persistent", ok, time.monotonic() - start)
            time.sleep(0.1)


def attack(kind, n, seconds, stop):
    """Open n connections as fast as possible (within the phase), doing
    what `kind` says on each, and hold them all until the phase ends."""
    held = []
    end = time.monotonic() + seconds
    rng = random.Random(7)
    opened = refused = 0
    for i in range(n):
        if stop.is_set() or time.monotonic() > end:
            break
        src = "127.0.1.1" if kind == "idle-1" else f"127.1.{(i % 1000) // 250}.{1 + (i % 1000) % 250}"
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            err = s.connect_ex(TARGET)
            if err not in (0, errno.EINPROGRESS):
                s.close()
                refused += 1
                continue
            if kind.startswith("half"):
                try:
                    s.send(b"\xff\xff" + bytes(range(10)))
                except OSError:
                    pass
            elif kind.startswith("garbage"):
                try:
                    s.send(bytes(rng.getrandbits(8) for _ in range(200)))
                except OSError:
                    pass
            held.append(s)
            opened += 1
        except OSError:
            s.close()
            refused += 1
        if i % 500 == 499:
            time.sleep(0.01)
    while not stop.is_set() and time.monotonic() < end:
        time.sleep(0.05)
    for s in held:
        s.close()
    return opened, refused


def sampler(pid, samples, stop):
    while not stop.is_set():
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            samples.append((time.monotonic(), common.rss_kib(pid), fds))
        except OSError:
            pass
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rest", type=float, default=12)
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--out", default=os.path.join(common.ROOT, "bench/results/tcp_attack.md"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.connections + 1000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    n = min(args.connections, want - 500)

    tmp = tempfile.mkdtemp(prefix="mnb-tcpattack.")
    socks = os.path.join(tmp, "sockets")
    os.mkdir(socks)
    procs = [common.start_backend(socks, name) for name in ("5300", "5301", "5302")]
    # Remotes expire after 30 s instead of 300, so that the run can show
    # the memory coming back once the attackers' remotes are gone.
    bal = common.start_balancer(socks, os.path.join(tmp, "balancer.log"),
                                ["--remote-expiry", "30s", "--expiry-sweep", "5s"])
    procs.append(bal)
    samples = []
    stop_all = threading.Event()
    legit = Legit()
    threads = [threading.Thread(target=legit.fresh), threading.Thread(target=legit.persistent),
               threading.Thread(target=sampler, args=(bal.pid, samples, stop_all))]
    rows = []
    try:
        for t in threads:
            t.start()
        for phase in ["baseline", "idle-1", "idle-1000", "half-1000", "garbage-1000"]:
            legit.phase = phase
            t0 = time.monotonic()
            before = samples[-1] if samples else (t0, 0, 0)
            if phase == "baseline":
                time.sleep(args.seconds)
                opened = refused = 0
            else:
                opened, refused = attack(phase, n, args.seconds, stop_all)
            t1 = time.monotonic()
            legit.phase = phase + " (rest)"
            time.sleep(args.rest)
            t2 = time.monotonic()
            during = [s for s in samples if t0 <= s[0] <= t1] or [before]
            after = samples[-1]
            with legit.lock:
                f = legit.stats.get((phase, "fresh"), [0, 0, 0.0])
                p = legit.stats.get((phase, "persistent"), [0, 0, 0.0])
                fr = legit.stats.get((phase + " (rest)", "fresh"), [0, 0, 0.0])
            row = dict(phase=phase, opened=opened, refused=refused,
                       fresh=f, persistent=p, rest=fr,
                       rss=(before[1], max(s[1] for s in during), after[1]),
                       fds=(before[2], max(s[2] for s in during), after[2]),
                       secs=t2 - t0)
            rows.append(row)
            print(f"{phase:13} attack conns {opened:6}  legit fresh {f[1]}/{f[0]} (max {f[2]*1000:.0f} ms)"
                  f"  persistent {p[1]}/{p[0]} (max {p[2]*1000:.0f} ms)  after: {fr[1]}/{fr[0]}"
                  f"  RSS KiB {row['rss']}  fds {row['fds']}", flush=True)
        # The attackers' remotes expire (30 s after their last connection),
        # the sweep gives their memory back.
        legit.stop.set()
        time.sleep(45)
        recovered = samples[-1]
        print(f"after the attackers' remotes expired: RSS {recovered[1]} KiB, "
              f"fds {recovered[2]} (baseline {rows[0]['rss'][1]} KiB, {rows[0]['fds'][2]} fds)",
              flush=True)
    finally:
        legit.stop.set()
        stop_all.set()
        for t in threads:
            t.join(timeout=5)
        # The balancer's counters into its log (SIGUSR1), then stop all.
        os.kill(bal.pid, signal.SIGUSR1)
        time.sleep(0.5)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()
    counters = {}
    try:
        import json
        for line in open(os.path.join(tmp, "balancer.log")):
            if '"msg":"counters"' in line:
                counters = json.loads(line)
    except OSError:
        pass
    with open(args.out, "w") as out:
        out.write("# TCP exhaustion attacks\n\n")
        out.write(f"`python3 bench/tcp_attack.py --seconds {args.seconds:g} --rest {args.rest:g} "
                  f"--connections {n}`, {time.strftime('%Y-%m-%d')}, this machine (2 cores), "
                  "balancer with default TCP settings, three demo backends.\n\n")
        out.write("Legitimate clients: a fresh TCP connection per query every 20 ms, and one "
                  "persistent connection asking every 100 ms (reconnecting when closed); "
                  "answered = answer within 1 s of the first try.\n\n")
        out.write("| phase | attack connections opened | legit fresh answered | max latency | "
                  "legit persistent answered | max latency | fresh, in the rest after | "
                  "RSS KiB before / peak / after | descriptors before / peak / after |\n")
        out.write("|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f, p, fr = r["fresh"], r["persistent"], r["rest"]
            out.write(f"| {r['phase']} | {r['opened']:,} | {f[1]}/{f[0]} | {f[2]*1000:.0f} ms | "
                      f"{p[1]}/{p[0]} | {p[2]*1000:.0f} ms | {fr[1]}/{fr[0]} | "
                      f"{r['rss'][0]:,} / {r['rss'][1]:,} / {r['rss'][2]:,} | "
                      f"{r['fds'][0]} / {r['fds'][1]} / {r['fds'][2]} |\n")
        if rows and samples:
            out.write(f"\nAfter the attackers' remotes expired (45 s after the last phase, `--remote-expiry 30s`): "
                      f"RSS {samples[-1][1]:,} KiB, {samples[-1][2]} descriptors; baseline "
                      f"{rows[0]['rss'][1]:,} KiB, {rows[0]['fds'][2]} descriptors.\n")
        if counters:
            keys = [k for k in sorted(counters) if k.startswith("tcp_") and counters[k]]
            out.write("\nThe balancer's TCP counters at exit: "
                      + ", ".join(f"`{k}` {counters[k]:,}" for k in keys) + ".\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
