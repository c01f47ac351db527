"""What the single-balancer benchmarks share (overload.py, failover.py,
ab.py, profile.py): starting demo backends and the release balancer on
loopback, asking it a question, running dnsperf with its output kept in a
file, waiting on a condition with a deadline, and reading a process's CPU
time and context switches."""

import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def start_backend(socks, name, extra=()):
    """A demo backend on socks/name, once it says it is ready."""
    p = subprocess.Popen([os.path.join(ROOT, "target/release/mname-demo-backend"),
                          "-s", os.path.join(socks, name), "-n", name, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    return p


def start_balancer(socks, log_path, extra=()):
    """The balancer on 127.0.0.1:PORT in front of socks, logging at info to
    log_path, with `extra` flags; returned once a query is answered by a
    backend (bounded)."""
    log = open(log_path, "w")
    bal = subprocess.Popen([os.path.join(ROOT, "target/release/mname-balancer"),
                            "-b", "127.0.0.1", "-p", str(PORT), "-s", socks, "-l", "info", *extra],
                           stdout=log, stderr=subprocess.STDOUT)
    bal.log = log
    deadline = time.time() + 20
    while ask("127.0.0.2") != 0:
        if time.time() > deadline or bal.poll() is not None:
            bal.kill()
            sys.exit("balancer not answering")
    return bal


def write_queries(tmp):
    """The dnsperf query file: names the demo zone answers."""
    qfile = os.path.join(tmp, "queries")
    with open(qfile, "w") as f:
        f.write("www.example.com A\na1.example.com A\nwhoami.example.com TXT\n")
    return qfile


def wait_for(cond, what, timeout=20.0):
    """Poll `cond` until it holds; exit naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"{os.path.basename(sys.argv[0])}: timed out waiting for {what}")
        time.sleep(0.02)


def threads(pid):
    """The /proc directories of every thread of `pid` (none once it is gone)."""
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []


def proc_counts(pid):
    """CPU nanoseconds and (voluntary, involuntary) context switches of
    every thread of `pid`."""
    ns, vol, invol = 0, 0, 0
    for task in threads(pid):
        try:
            ns += int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except OSError:
            continue
        vol += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        invol += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    return ns, vol, invol


def user_system_ticks(pid):
    """User and system time of every thread of `pid`, in clock ticks
    (/proc's split of the CPU time by where the timer ticks fell: coarse,
    so read it over a window of many ticks)."""
    user, system = 0, 0
    for task in threads(pid):
        try:
            # Fields after the command name, which may hold spaces.
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system
