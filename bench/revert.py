#!/usr/bin/env python3
"""How soon a restarted backend has its clients back.

Two demo backends (release build) and the balancer with its default
timers on 127.0.0.1:15700.  A client pinned to backend 5300 asks `whoami`
over UDP; 5300 is killed with SIGKILL (its socket file stays behind, as
after a crash), the client fails over to 5301, and 5300 is started again.
Measured: from the moment 5300's new socket accepts connections (this
script connects to it every millisecond until it does; the backend says
it is ready first, so the balancer may already be connected) to the first
answer from 5300 to that client (asking every 2 ms), and, as an upper
bound, from the moment the new process was started.  The balancer finds
the new socket through its directory watch; without it, the reconnect
back-off (1 s after a fault) and the 5 s scan would decide.

    python3 bench/revert.py [--rounds 10]

Prints each round and the median and maximum.  Loopback only; every
process is stopped by its PID; every wait is bounded.
"""

import argparse
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def whoami(sock, qid):
    """The backend name answering `whoami`, or None within 50 ms."""
    sock.sendto(common.query("whoami.example.com", qid, qtype=16), ("127.0.0.1", common.PORT))
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except OSError:
            return None
        if len(data) > 12 and struct.unpack(">H", data[:2])[0] == qid:
            # The TXT string is the answer's last bytes: length, then text.
            for name in ("5300", "5301"):
                if data.endswith(name.encode()):
                    return name
            return None
    return None


def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mnb-revert.")
    socks = os.path.join(tmp, "sockets")
    os.mkdir(socks)
    backends = {name: common.start_backend(socks, name) for name in ("5300", "5301")}
    bal = common.start_balancer(socks, os.path.join(tmp, "balancer.log"))
    took = []
    from_spawn = []
    try:
        client = None
        for n in range(2, 250):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.5.{n}", 0))
            if whoami(s, n) == "5300":
                client = s
                break
            s.close()
        if client is None:
            sys.exit("revert.py: no client pinned to 5300")
        qid = 1000
        for r in range(args.rounds):
            victim = backends["5300"]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            deadline = time.monotonic() + 10
            while whoami(client, qid) != "5301":
                qid = (qid + 1) % 65536
                if time.monotonic() > deadline:
                    sys.exit("revert.py: no failover")
            time.sleep(0.5)
            spawned = time.monotonic()
            backends["5300"] = common.start_backend(socks, "5300")
            path = os.path.join(socks, "5300")
            deadline = time.monotonic() + 10
            while not accepts(path):
                if time.monotonic() > deadline:
                    sys.exit("revert.py: the new socket never accepted")
                time.sleep(0.001)
            t0 = time.monotonic()
            while True:
                qid = (qid + 1) % 65536
                if whoami(client, qid) == "5300":
                    break
                if time.monotonic() - t0 > 30:
                    sys.exit("revert.py: not back within 30 s")
                time.sleep(0.002)
            back = time.monotonic()
            ms = (back - t0) * 1000
            took.append(ms)
            from_spawn.append((back - spawned) * 1000)
            print(f"round {r + 1}: back on 5300 {ms:.1f} ms after its socket accepted "
                  f"({from_spawn[-1]:.1f} ms after the process was started)", flush=True)
            time.sleep(0.5)
    finally:
        for p in [*backends.values(), bal]:
            p.terminate()
        for p in [*backends.values(), bal]:
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()
    print(f"median {statistics.median(took):.1f} ms, max {max(took):.1f} ms after the socket accepted; "
          f"from the process start: median {statistics.median(from_spawn):.1f} ms, "
          f"max {max(from_spawn):.1f} ms; {len(took)} restarts")


if __name__ == "__main__":
    main()
