#!/usr/bin/env python3
"""Soak: legitimate load for a long time while backends fail and hostile
clients come and go; reports legitimate answers, RSS and descriptors over
time.

Three demo backends (release build) and the balancer on 127.0.0.1:15700.
For --minutes (default 20), minute by minute:

- legitimate load all along: three paced UDP dnsperf clients
  (127.0.0.11..13, -Q --rate each) and one paced TCP client (127.0.0.14,
  -Q --tcp-rate), restarted each minute so that each minute is counted;
- one event per minute, in a cycle of five: kill -9 a backend and restart
  it 5 s later; SIGSTOP a backend for 10 s; a spoofed-source UDP flood
  (20 s, fresh 127.x.y.z sources, with short and response datagrams
  mixed in); 500 idle TCP connections held for 20 s; a backend's socket
  removed and restored 10 s later;
- every 10 s: the balancer's RSS and open descriptors.

    python3 bench/soak.py [--minutes 20] [--rate 700] [--tcp-rate 100]

Writes bench/results/soak.md (or --out).  Loopback only; every process it
starts is stopped by its PID; every load is bounded in count and time.
"""

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

EVENTS = ["kill -9 and restart", "SIGSTOP 10 s", "spoofed flood 20 s",
          "500 idle TCP 20 s", "socket removed 10 s"]


def rss_and_fds(pid):
    try:
        return common.rss_kib(pid), len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0, 0


def flood(stop, seconds):
    """Datagrams from fresh 127.x.y.z sources, 50 per source, for `seconds`."""
    end = time.time() + seconds
    q = common.query("www.example.com", 1)
    sent = 0
    while time.time() < end and not stop.is_set():
        src = f"127.{random.randint(20, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((src, 0))
            for i in range(50):
                payload = q if i % 10 else (b"\x00\x01" if i % 20 else b"\x12\x34\x81\x00" + q[4:])
                s.sendto(payload, ("127.0.0.1", common.PORT))
                sent += 1
        except OSError:
            pass
        finally:
            s.close()
    return sent


def idle_tcp(stop, seconds, count=500):
    conns = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((f"127.0.{200 + i // 250}.{i % 250 + 1}", 0))
            s.connect(("127.0.0.1", common.PORT))
            conns.append(s)
        except OSError:
            s.close()
    stop.wait(seconds)
    for s in conns:
        s.close()
    return len(conns)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=20)
    ap.add_argument("--rate", type=int, default=700, help="queries/s per UDP client (3 clients)")
    ap.add_argument("--tcp-rate", type=int, default=100, help="queries/s of the TCP client")
    ap.add_argument("--out", default=os.path.join(common.ROOT, "bench", "results", "soak.md"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="soak-")
    socks = os.path.join(tmp, "s")
    os.mkdir(socks)
    qfile = common.write_queries(tmp)
    names = ["5300", "5301", "5302"]
    backends = {n: common.start_backend(socks, n) for n in names}
    bal = common.start_balancer(socks, os.path.join(tmp, "balancer.log"))
    samples = []
    rows = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append((time.time(),) + rss_and_fds(bal.pid))
            stop.wait(10)

    threading.Thread(target=sampler, daemon=True).start()
    start = time.time()
    try:
        for minute in range(args.minutes):
            event = EVENTS[minute % len(EVENTS)]
            perfs = [common.dnsperf(["-l", "60", "-Q", str(args.rate), "-c", "1", "-q", "32", "-t", "2"],
                                    f"127.0.0.{11 + i}", qfile) for i in range(3)]
            perfs.append(common.dnsperf(["-l", "60", "-Q", str(args.tcp_rate), "-m", "tcp", "-c", "2",
                                         "-q", "16", "-t", "2"], "127.0.0.14", qfile))
            time.sleep(10)
            victim = names[minute % 3]
            detail = ""
            if event.startswith("kill"):
                backends[victim].kill()
                backends[victim].wait()
                time.sleep(5)
                backends[victim] = common.start_backend(socks, victim)
                detail = f"backend {victim}"
            elif event.startswith("SIGSTOP"):
                os.kill(backends[victim].pid, signal.SIGSTOP)
                time.sleep(10)
                os.kill(backends[victim].pid, signal.SIGCONT)
                detail = f"backend {victim}"
            elif event.startswith("spoofed"):
                detail = f"{flood(stop, 20):,} datagrams"
            elif event.startswith("500"):
                detail = f"{idle_tcp(stop, 20)} connections"
            else:
                path = os.path.join(socks, victim)
                os.rename(path, path + ".away")
                time.sleep(10)
                os.rename(path + ".away", path)
                detail = f"backend {victim}"
            udp = {"sent": 0, "completed": 0, "lost": 0}
            tcp = dict(udp)
            for i, p in enumerate(perfs):
                r = common.parse_dnsperf(common.finish(p, timeout=120))
                target = tcp if i == 3 else udp
                for k in target:
                    target[k] += r.get(k, 0)
            rss, fds = rss_and_fds(bal.pid)
            rows.append((minute + 1, event, detail, udp, tcp, rss, fds))
            print(f"minute {minute + 1:>2} {event:<22} udp {udp['completed']:>7,}/{udp['sent']:>7,} "
                  f"tcp {tcp['completed']:>6,}/{tcp['sent']:>6,} rss {rss} KiB fds {fds}", flush=True)
    finally:
        stop.set()
        for p in list(backends.values()) + [bal]:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.terminate()
        for p in list(backends.values()) + [bal]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    total = lambda key, proto: sum(r[3 if proto == "udp" else 4][key] for r in rows)
    rss = [s[1] for s in samples if s[1]]
    fds = [s[2] for s in samples if s[2]]
    lines = [
        "# Soak",
        "",
        f"{time.strftime('%Y-%m-%d')}, {args.minutes} minutes "
        f"({(time.time() - start) / 60:.1f} measured), `python3 bench/soak.py --minutes {args.minutes} "
        f"--rate {args.rate} --tcp-rate {args.tcp_rate}`.",
        "",
        f"- legitimate UDP answered: {total('completed', 'udp'):,} of {total('sent', 'udp'):,} "
        f"({100.0 * total('completed', 'udp') / max(total('sent', 'udp'), 1):.3f}%)",
        f"- legitimate TCP answered: {total('completed', 'tcp'):,} of {total('sent', 'tcp'):,} "
        f"({100.0 * total('completed', 'tcp') / max(total('sent', 'tcp'), 1):.3f}%)",
        f"- RSS KiB: first {rss[0] if rss else 0}, peak {max(rss) if rss else 0}, last {rss[-1] if rss else 0}",
        f"- descriptors: first {fds[0] if fds else 0}, peak {max(fds) if fds else 0}, last {fds[-1] if fds else 0}",
        "",
        "| minute | event | detail | UDP answered/sent | TCP answered/sent | RSS KiB | fds |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for m, event, detail, udp, tcp, r, f in rows:
        lines.append(f"| {m} | {event} | {detail} | {udp['completed']:,}/{udp['sent']:,} | "
                     f"{tcp['completed']:,}/{tcp['sent']:,} | {r} | {f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
