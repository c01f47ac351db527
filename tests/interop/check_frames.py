#!/usr/bin/env python3
"""Drive tests/interop/backend.js (node-mname) with hand-built balancer frames.

Proves that the real node-mname backend behaves the way the Rust balancer
relies on, without the balancer in the loop:

  * a stale socket file at the socket path is replaced;
  * the backend opens no INET socket (AF_UNIX only);
  * control session: CLIENT_HELLO -> SERVER_HELLO, CLIENT_HEARTBEAT ->
    SERVER_HEARTBEAT, INBOUND_UDP -> OUTBOUND_UDP carrying the same address
    and port (d c b a byte order for a.b.c.d), answers for whoami / client /
    www / a<N> / big (TC set) / nope (NXDOMAIN) / outside the zone (REFUSED),
    several frames in one write;
  * TCP session (INBOUND_TCP without HELLO) -> INBOUND_TCP_OK, then plain
    DNS over TCP: client address, whole big answer, NXDOMAIN, pipelining,
    half-close;
  * SIGTERM -> exit status 0.

Usage: python3 tests/interop/check_frames.py [--node NODE] [--timeout SECS]
Needs: node and tests/interop/node_modules (scripts/install-test-deps).
Exit status 0 on success, 1 on any mismatch (with a message on stderr).
Standard library only.
"""

import argparse
import json
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND_JS = os.path.join(HERE, "backend.js")

CLIENT_HELLO = 1
INBOUND_UDP = 2
INBOUND_TCP = 3
CLIENT_HEARTBEAT = 4
SERVER_HELLO = 1001
OUTBOUND_UDP = 1002
INBOUND_TCP_OK = 1003
SERVER_HEARTBEAT = 1004

T_A = 1
T_TXT = 16
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5

ZONE = "example.com"
BACKEND_NAME = "check-be-1"


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# --------------------------------------------------------------------------
# DNS encoding / decoding (just what the checks need)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def build_query(qid, name, qtype, rd=True):
    flags = 0x0100 if rd else 0
    hdr = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0)
    return hdr + encode_name(name) + struct.pack(">HH", qtype, 1)


def read_name(msg, off):
    """Return (name, offset after the name) following compression pointers."""
    labels = []
    end = None
    hops = 0
    while True:
        expect(off < len(msg), "DNS name runs off the end of the message")
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            expect(off + 1 < len(msg), "truncated compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            expect(hops < 64, "compression pointer loop")
            continue
        expect(n & 0xC0 == 0, "bad label type 0x%02x" % n)
        labels.append(msg[off + 1 : off + 1 + n].decode("ascii"))
        off += 1 + n
    return ".".join(labels), (end if end is not None else off)


def parse_response(msg):
    expect(len(msg) >= 12, "DNS message shorter than a header (%d)" % len(msg))
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    r = {
        "id": qid,
        "qr": bool(flags & 0x8000),
        "aa": bool(flags & 0x0400),
        "tc": bool(flags & 0x0200),
        "rcode": flags & 0x000F,
        "counts": (qd, an, ns, ar),
        "question": [],
        "answers": [],
    }
    off = 12
    for _ in range(qd):
        name, off = read_name(msg, off)
        qtype, qclass = struct.unpack(">HH", msg[off : off + 4])
        off += 4
        r["question"].append((name, qtype, qclass))
    for _ in range(an):
        name, off = read_name(msg, off)
        expect(off + 10 <= len(msg), "truncated resource record")
        rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", msg[off : off + 10])
        off += 10
        rdata = msg[off : off + rdlen]
        expect(len(rdata) == rdlen, "truncated rdata")
        off += rdlen
        if rtype == T_A:
            value = socket.inet_ntoa(rdata)
        elif rtype == T_TXT:
            value, i = [], 0
            while i < len(rdata):
                n = rdata[i]
                value.append(rdata[i + 1 : i + 1 + n].decode("latin-1"))
                i += 1 + n
        else:
            value = rdata
        r["answers"].append(
            {"name": name, "type": rtype, "class": rclass, "ttl": ttl, "value": value}
        )
    return r


def check_answer(resp, qid, qname, qtype, rcode, what):
    expect(resp["id"] == qid, "%s: id %d, want %d" % (what, resp["id"], qid))
    expect(resp["qr"], "%s: QR bit not set" % what)
    expect(
        resp["rcode"] == rcode,
        "%s: rcode %d, want %d" % (what, resp["rcode"], rcode),
    )
    expect(
        resp["question"] == [(qname, qtype, 1)],
        "%s: question section %r" % (what, resp["question"]),
    )
    for a in resp["answers"]:
        expect(
            a["name"].lower() == qname.lower() and a["type"] == qtype,
            "%s: unexpected answer record %r" % (what, a),
        )


def big_texts():
    out = []
    for i in range(40):
        s = "big-%02d-" % i
        while len(s) < 100:
            s += chr(97 + len(s) % 26)
        out.append(s)
    return out


# --------------------------------------------------------------------------
# Frame helpers


def recv_exact(sock, n, what):
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise CheckFailed(
                "timed out waiting for %s (%d of %d bytes)" % (what, len(buf), n)
            )
        if not chunk:
            raise CheckFailed(
                "EOF while waiting for %s (%d of %d bytes)" % (what, len(buf), n)
            )
        buf += chunk
    return buf


def recv_u32(sock, what):
    return struct.unpack("<I", recv_exact(sock, 4, what))[0]


def ip_wire(ip):
    """a.b.c.d as node-mname reads it: u32 LE of a<<24|b<<16|c<<8|d."""
    return bytes(reversed(socket.inet_aton(ip)))


def udp_frame(ip, port, payload):
    return (
        struct.pack("<I", INBOUND_UDP)
        + ip_wire(ip)
        + struct.pack("<II", port, len(payload))
        + payload
    )


def tcp_frame(ip, port):
    return struct.pack("<I", INBOUND_TCP) + ip_wire(ip) + struct.pack("<I", port)


def recv_outbound_udp(sock, what):
    hdr = recv_exact(sock, 16, "OUTBOUND_UDP header for " + what)
    ftype = struct.unpack("<I", hdr[:4])[0]
    expect(
        ftype == OUTBOUND_UDP,
        "%s: frame type %d, want OUTBOUND_UDP (%d)" % (what, ftype, OUTBOUND_UDP),
    )
    addr = socket.inet_ntoa(bytes(reversed(hdr[4:8])))
    port, length = struct.unpack("<II", hdr[8:16])
    expect(length <= 1500, "%s: OUTBOUND_UDP length %d > 1500" % (what, length))
    payload = recv_exact(sock, length, "OUTBOUND_UDP payload for " + what)
    return addr, port, hdr[4:8], payload


def tcp_send_query(sock, msg):
    sock.sendall(struct.pack(">H", len(msg)) + msg)


def tcp_recv_msg(sock, what):
    n = struct.unpack(">H", recv_exact(sock, 2, "length prefix for " + what))[0]
    return recv_exact(sock, n, "DNS message for " + what)


# --------------------------------------------------------------------------
# Backend process


class Backend:
    def __init__(self, node, sock_path, name, timeout):
        self.lines = queue.Queue()
        self.all_lines = []
        env = dict(os.environ)
        env.setdefault("LOG_LEVEL", "info")
        self.proc = subprocess.Popen(
            [node, BACKEND_JS, "--socket", sock_path, "--name", name, "--zone", ZONE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.stderr = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.ready = None

    def _pump_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.all_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed("backend not ready within %.0fs" % timeout)
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait(timeout=5)
                raise CheckFailed(
                    "backend exited (status %s) before it was ready; stderr:\n%s"
                    % (rc, "\n".join(self.stderr))
                )
            try:
                rec = json.loads(line)
            except ValueError:
                raise CheckFailed("backend wrote a non-JSON line: %r" % line)
            if rec.get("msg") == "backend ready":
                self.ready = rec
                return rec

    def log_records(self):
        out = []
        for line in list(self.all_lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, timeout):
        """SIGTERM the backend by its PID; return its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
            raise CheckFailed("backend ignored SIGTERM for %.0fs" % timeout)


def inet_socket_inodes():
    inodes = set()
    for name in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    inodes.add(line.split()[9])
        except OSError:
            pass
    return inodes


def process_socket_inodes(pid):
    out = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:[") : -1])
    return out


# --------------------------------------------------------------------------
# The checks


class Checker:
    def __init__(self, timeout):
        self.timeout = timeout
        self.report = []
        self.qid = random.randrange(1, 0xFFFF)

    def ok(self, msg):
        self.report.append(msg)
        print("ok   " + msg, flush=True)

    def next_id(self):
        self.qid = (self.qid % 0xFFFF) + 1
        return self.qid

    def connect(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(path)
        return s

    def udp_query(self, ctl, ip, port, name, qtype, rcode, what):
        qid = self.next_id()
        ctl.sendall(udp_frame(ip, port, build_query(qid, name, qtype)))
        addr, rport, raw_addr, payload = recv_outbound_udp(ctl, what)
        expect(
            raw_addr == ip_wire(ip),
            "%s: address bytes %s, want %s"
            % (what, raw_addr.hex(), ip_wire(ip).hex()),
        )
        expect(
            (addr, rport) == (ip, port),
            "%s: reply to %s:%d, want %s:%d" % (what, addr, rport, ip, port),
        )
        resp = parse_response(payload)
        check_answer(resp, qid, name, qtype, rcode, what)
        return resp, payload

    def run(self, node):
        tmp = tempfile.mkdtemp(prefix="mname-check-")
        path = os.path.join(tmp, "5301")
        backend = None
        try:
            # A stale socket, as left behind by a backend that died.
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)
            stale.close()
            expect(os.path.exists(path), "could not create the stale socket")

            backend = Backend(node, path, BACKEND_NAME, self.timeout)
            backend.wait_ready(self.timeout)
            expect(
                backend.ready.get("name") == "backend-" + BACKEND_NAME,
                "ready record has logger name %r" % backend.ready.get("name"),
            )
            self.ok(
                "backend pid %d ready on %s (stale socket replaced), "
                "logger %s" % (backend.proc.pid, path, backend.ready["name"])
            )

            if os.path.isdir("/proc/%d/fd" % backend.proc.pid):
                inet = process_socket_inodes(backend.proc.pid) & inet_socket_inodes()
                expect(not inet, "backend has INET sockets open: %s" % sorted(inet))
                self.ok("backend has no TCP/UDP sockets (AF_UNIX only)")

            self.check_control(path)
            self.check_tcp(path)
            self.check_tcp_data_behind_frame(path)

            recs = backend.log_records()
            expect(
                any(r.get("msg") == "truncated response sent" for r in recs),
                "backend did not log 'truncated response sent'",
            )
            self.ok("backend logged node-mname's 'truncated response sent'")

            rc = backend.stop(self.timeout)
            expect(rc == 0, "backend exited with status %s after SIGTERM" % rc)
            self.ok("SIGTERM -> backend exited with status 0")
            backend = None
        finally:
            if backend is not None and backend.proc.poll() is None:
                os.kill(backend.proc.pid, signal.SIGKILL)
                backend.proc.wait(timeout=self.timeout)
            if backend is not None and backend.stderr:
                sys.stderr.write(
                    "backend stderr:\n  " + "\n  ".join(backend.stderr) + "\n"
                )
            try:
                os.unlink(path)
            except OSError:
                pass
            try:
                os.rmdir(tmp)
            except OSError as e:
                sys.stderr.write("check_frames: could not remove %s: %s\n"
                                 % (tmp, e))

    def check_control(self, path):
        ctl = self.connect(path)
        try:
            ctl.sendall(struct.pack("<I", CLIENT_HELLO))
            t = recv_u32(ctl, "SERVER_HELLO")
            expect(t == SERVER_HELLO, "after CLIENT_HELLO got frame type %d" % t)
            self.ok("CLIENT_HELLO -> SERVER_HELLO (1001)")

            ctl.sendall(struct.pack("<I", CLIENT_HEARTBEAT))
            t = recv_u32(ctl, "SERVER_HEARTBEAT")
            expect(t == SERVER_HEARTBEAT, "after CLIENT_HEARTBEAT got type %d" % t)
            self.ok("CLIENT_HEARTBEAT -> SERVER_HEARTBEAT (1004)")

            resp, _ = self.udp_query(
                ctl, "192.0.2.200", 40000, "whoami." + ZONE, T_TXT,
                RCODE_NOERROR, "UDP TXT whoami",
            )
            vals = [a["value"] for a in resp["answers"]]
            expect(vals == [[BACKEND_NAME]], "whoami answered %r" % vals)
            expect(resp["aa"], "whoami answer is not authoritative")
            self.ok('UDP TXT whoami -> "%s" (OUTBOUND_UDP to 192.0.2.200:40000)'
                    % BACKEND_NAME)

            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "client." + ZONE, T_TXT,
                RCODE_NOERROR, "UDP TXT client",
            )
            vals = [a["value"] for a in resp["answers"]]
            expect(vals == [["10.1.2.3 5353"]], "client answered %r" % vals)
            self.ok('UDP TXT client from 10.1.2.3:5353 (wire 03 02 01 0a) '
                    '-> "10.1.2.3 5353"')

            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "www." + ZONE, T_A, RCODE_NOERROR,
                "UDP A www",
            )
            got = [(a["value"], a["ttl"]) for a in resp["answers"]]
            expect(got == [("192.0.2.1", 60)], "A www answered %r" % got)
            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "A77.EXAMPLE.COM", T_A, RCODE_NOERROR,
                "UDP A A77 (upper case)",
            )
            got = [(a["value"], a["ttl"]) for a in resp["answers"]]
            expect(got == [("192.0.2.77", 60)], "A a77 answered %r" % got)
            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, ZONE, T_A, RCODE_NOERROR, "UDP A apex",
            )
            got = [a["value"] for a in resp["answers"]]
            expect(got == ["192.0.2.1"], "A apex answered %r" % got)
            self.ok("UDP A www/apex -> 192.0.2.1 TTL 60, A77 -> 192.0.2.77")

            resp, payload = self.udp_query(
                ctl, "10.1.2.3", 5353, "big." + ZONE, T_TXT, RCODE_NOERROR,
                "UDP TXT big",
            )
            expect(resp["tc"], "UDP big answer has no TC bit")
            expect(not resp["answers"], "UDP big answer kept %d answers"
                   % len(resp["answers"]))
            expect(len(payload) <= 512, "UDP big answer is %d bytes" % len(payload))
            self.ok("UDP TXT big -> TC set, 0 answers, %d bytes" % len(payload))

            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "nope." + ZONE, T_TXT, RCODE_NXDOMAIN,
                "UDP TXT nope",
            )
            expect(not resp["answers"], "NXDOMAIN carries answers")
            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "a255." + ZONE, T_A, RCODE_NXDOMAIN,
                "UDP A a255",
            )
            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "www." + ZONE, T_TXT, RCODE_NOERROR,
                "UDP TXT www (NODATA)",
            )
            expect(not resp["answers"], "NODATA carries answers")
            resp, _ = self.udp_query(
                ctl, "10.1.2.3", 5353, "www.example.org", T_A, RCODE_REFUSED,
                "UDP A www.example.org",
            )
            expect(not resp["answers"], "REFUSED carries answers")
            self.ok("UDP nope/a255 -> NXDOMAIN, TXT www -> NODATA, "
                    "example.org -> REFUSED")

            # Several frames in one write, the UDP one split into two writes.
            ids = [self.next_id() for _ in range(3)]
            clients = [("10.0.0.%d" % (i + 1), 1000 + i) for i in range(3)]
            blob = b"".join(
                udp_frame(ip, port, build_query(q, "client." + ZONE, T_TXT))
                for q, (ip, port) in zip(ids, clients)
            )
            blob += struct.pack("<I", CLIENT_HEARTBEAT)
            cut = len(blob) - 7
            ctl.sendall(blob[:cut])
            ctl.sendall(blob[cut:])
            seen = {}
            for i in range(3):
                addr, port, _, payload = recv_outbound_udp(ctl, "batched query")
                resp = parse_response(payload)
                seen[resp["id"]] = ((addr, port), resp["answers"][0]["value"])
            t = recv_u32(ctl, "SERVER_HEARTBEAT after batch")
            expect(t == SERVER_HEARTBEAT, "after batch got frame type %d" % t)
            for q, (ip, port) in zip(ids, clients):
                expect(
                    seen.get(q) == ((ip, port), ["%s %d" % (ip, port)]),
                    "batched query %d: got %r" % (q, seen.get(q)),
                )
            self.ok("3 INBOUND_UDP + heartbeat in one write (split oddly) "
                    "-> 3 OUTBOUND_UDP routed by frame address + heartbeat")
        finally:
            ctl.close()

    def check_tcp(self, path):
        s = self.connect(path)
        try:
            s.sendall(tcp_frame("10.9.8.7", 40001))
            t = recv_u32(s, "INBOUND_TCP_OK")
            expect(t == INBOUND_TCP_OK, "after INBOUND_TCP got frame type %d" % t)
            self.ok("INBOUND_TCP (no HELLO) -> INBOUND_TCP_OK (1003)")

            qid = self.next_id()
            tcp_send_query(s, build_query(qid, "client." + ZONE, T_TXT))
            resp = parse_response(tcp_recv_msg(s, "TCP client"))
            check_answer(resp, qid, "client." + ZONE, T_TXT, RCODE_NOERROR,
                         "TCP TXT client")
            vals = [a["value"] for a in resp["answers"]]
            expect(vals == [["10.9.8.7 40001"]], "TCP client answered %r" % vals)
            self.ok('TCP TXT client -> "10.9.8.7 40001"')

            qid = self.next_id()
            tcp_send_query(s, build_query(qid, "big." + ZONE, T_TXT))
            msg = tcp_recv_msg(s, "TCP big")
            resp = parse_response(msg)
            check_answer(resp, qid, "big." + ZONE, T_TXT, RCODE_NOERROR,
                         "TCP TXT big")
            expect(not resp["tc"], "TCP big answer has TC set")
            vals = [a["value"] for a in resp["answers"]]
            expect(vals == [[t] for t in big_texts()],
                   "TCP big answer differs (%d records)" % len(vals))
            self.ok("TCP TXT big -> %d TXT records, %d bytes, no TC"
                    % (len(vals), len(msg)))

            # Two pipelined queries in one write.
            q1, q2 = self.next_id(), self.next_id()
            a = build_query(q1, "nope." + ZONE, T_A)
            b = build_query(q2, "whoami." + ZONE, T_TXT)
            s.sendall(struct.pack(">H", len(a)) + a + struct.pack(">H", len(b)) + b)
            got = {}
            for _ in range(2):
                r = parse_response(tcp_recv_msg(s, "pipelined"))
                got[r["id"]] = r
            expect(set(got) == {q1, q2}, "pipelined ids %r" % sorted(got))
            check_answer(got[q1], q1, "nope." + ZONE, T_A, RCODE_NXDOMAIN,
                         "TCP A nope")
            expect(not got[q1]["answers"], "TCP NXDOMAIN carries answers")
            check_answer(got[q2], q2, "whoami." + ZONE, T_TXT, RCODE_NOERROR,
                         "TCP TXT whoami")
            self.ok("TCP pipelined: nope -> NXDOMAIN, whoami -> \"%s\""
                    % BACKEND_NAME)

            # Half-close: the backend finishes and closes its side.
            s.shutdown(socket.SHUT_WR)
            try:
                rest = s.recv(1)
            except socket.timeout:
                raise CheckFailed("backend did not close TCP session after "
                                  "our half-close")
            expect(rest == b"", "data after half-close: %r" % rest)
            self.ok("TCP half-close -> backend closes its side (EOF)")
        finally:
            s.close()

    def check_tcp_data_behind_frame(self, path):
        s = self.connect(path)
        try:
            qid = self.next_id()
            q = build_query(qid, "a9." + ZONE, T_A)
            s.sendall(
                struct.pack("<I", CLIENT_HELLO)
                + tcp_frame("172.16.0.1", 53000)
                + struct.pack(">H", len(q)) + q
            )
            t = recv_u32(s, "SERVER_HELLO")
            expect(t == SERVER_HELLO, "HELLO+TCP: first frame type %d" % t)
            t = recv_u32(s, "INBOUND_TCP_OK")
            expect(t == INBOUND_TCP_OK, "HELLO+TCP: second frame type %d" % t)
            resp = parse_response(tcp_recv_msg(s, "query behind frame"))
            check_answer(resp, qid, "a9." + ZONE, T_A, RCODE_NOERROR,
                         "TCP A a9 behind frame")
            got = [a["value"] for a in resp["answers"]]
            expect(got == ["192.0.2.9"], "A a9 answered %r" % got)
            self.ok("HELLO + INBOUND_TCP + query in one write -> "
                    "1001, 1003, A a9 -> 192.0.2.9")
        finally:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node", default="node", help="node binary (default: node)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per-step deadline in seconds (default 10)")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(HERE, "node_modules", "mname",
                                       "package.json")):
        print("check_frames: FAIL: tests/interop/node_modules missing; "
              "run scripts/install-test-deps", file=sys.stderr)
        return 1

    checker = Checker(args.timeout)
    start = time.monotonic()
    try:
        checker.run(args.node)
    except CheckFailed as e:
        print("check_frames: FAIL: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("check_frames: FAIL: %s" % e, file=sys.stderr)
        return 1
    print("check_frames: PASS (%d checks, %.2fs)"
          % (len(checker.report), time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
