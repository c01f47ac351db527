"""The peers' configurations, in one place: dnsdist and nginx set up for this
job (UDP and TCP DNS load balancing with client-address stickiness) the way
each one's own documentation advises for throughput.  Used by bench/run.py
and bench/curve.py; bench/README.md ("Peers at their best") explains every
setting.

Versions: the Debian packages, dnsdist 1.7.3 and nginx 1.22.  Every dnsdist
setting below exists in 1.7.3: its documentation is the one at git tag
dnsdist-1.7.3 of github.com/PowerDNS/pdns, directory pdns/dnsdistdist/docs/
(the same pages as https://dnsdist.org/, which shows the newest release).
nginx's reference is https://nginx.org/en/docs/ (each directive says the
version it appeared in; all used here predate 1.22).

dnsdist must never send anything off this machine: secpoll is off, there is
no carbon or webserver, and health checks go only to the backends given
(loopback).  The console (bench/run.py --cached reads the packet cache's
counters through it) listens on 127.0.0.1 only, with a key made per run.
"""

import os
from pathlib import Path

NGINX_STREAM_SO = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def cpus():
    """CPUs this process may run on (what nginx's `worker_processes auto` counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# dnsdist 1.7.3
# ---------------------------------------------------------------------------

# Queries one client TCP connection may have in flight in dnsdist (frontend
# and backend maxInFlight).  dnsperf keeps up to -q queries outstanding per
# process (64 in the benchmarks), possibly all on one of its connections.
DNSDIST_MAX_IN_FLIGHT = 128

# UDP datagrams read per recvmmsg() call by each listener thread.
DNSDIST_UDP_VECTOR = 32

# Client-address stickiness without a per-query Lua string: a per-thread
# FFI policy (lock-free, compiled in each thread's own Lua context) that
# hashes the raw bytes of the client address (4 for IPv4, 16 for IPv6) and
# picks among the servers that are up, as the old Lua policy did with
# dq.remoteaddr:toString().  A client moves only when the set of up servers
# changes.  The FFI declarations (dnsdist_ffi_*) are preloaded by dnsdist in
# the per-thread context (dnsdist-lua-ffi.cc, setupLuaLoadBalancingContext).
# Returns a 0-based index into the server list, as the per-thread FFI
# policy must (guides/serverselection.html, "Lua server policies").
DNSDIST_STICKY_FFI = r"""
local ffi = require("ffi")
local C = ffi.C
local addrp = ffi.new("const void*[1]")
local sizep = ffi.new("size_t[1]")
local server = ffi.new("const dnsdist_ffi_server_t*[1]")
local up = {}
return function(servers_list, dq)
  local n = tonumber(C.dnsdist_ffi_servers_list_get_count(servers_list))
  local nup = 0
  for i = 0, n - 1 do
    C.dnsdist_ffi_servers_list_get_server(servers_list, i, server)
    if C.dnsdist_ffi_server_is_up(server[0]) then
      nup = nup + 1
      up[nup] = i
    end
  end
  if nup == 0 then return 0 end
  C.dnsdist_ffi_dnsquestion_get_remoteaddr(dq, addrp, sizep)
  local bytes = ffi.cast("const uint8_t*", addrp[0])
  local h = 5381
  for j = 0, tonumber(sizep[0]) - 1 do
    h = (h * 33 + bytes[j]) % 4294967296
  end
  return up[(h % nup) + 1]
end
"""


# The packet cache of bench/run.py --cached (issue 13 point 5), set up as
# dnsdist's "Caching Responses" guide shows (guides/cache.html):
#   pc = newPacketCache(10000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60,
#                               staleTTL=60, dontAge=false})
#   getPool(""):setCache(pc)
# with the entries of the balancer's --cache-size, and sharded: "Lock
# contention and sharding" in the Performance Tuning guide
# (advanced/tuning.html) advises dividing the cache into shards, each with
# its own lock, when several threads (here a UDP listener per CPU and a TCP
# worker per CPU) share it; numberOfShards=20 is the default since 1.6.0
# (reference/config.html#newPacketCache, "numberOfShards now defaults to
# 20"), written out here so that the configuration says it.  Every option
# below is in 1.7.3's newPacketCache.
DNSDIST_CACHE_SHARDS = 20


def dnsdist_cache_lines(entries, dont_age=False):
    """Lua lines creating the packet cache and setting it on the default pool."""
    age = "true" if dont_age else "false"
    return [
        # maxTTL=86400: entries live at most a day (the guide's value and the
        #   default); minTTL=0: cache whatever TTL (60 s here);
        # temporaryFailureTTL=60: SERVFAIL/REFUSED cached 60 s;
        # staleTTL=60: the TTL of a stale answer (served only with
        #   setStaleCacheEntriesTTL, not set: off, like the balancer's
        #   --serve-stale by default);
        # dontAge: false (the guide's value) ages the TTLs of a cached
        #   answer, as the balancer's cache does; the reference advises true
        #   "when dnsdist fronts a cluster of authoritative servers", which
        #   bench/run.py --cached --dnsdist-dont-age measures;
        # numberOfShards: see DNSDIST_CACHE_SHARDS above;
        # deferrableInsertLock, maxNegativeTTL, parseECS, keepStaleData,
        #   cookieHashing, skipOptions: defaults.
        # guides/cache.html; reference/config.html#newPacketCache.
        f"pc = newPacketCache({entries}, {{maxTTL=86400, minTTL=0, temporaryFailureTTL=60, "
        f"staleTTL=60, dontAge={age}, numberOfShards={DNSDIST_CACHE_SHARDS}}})",
        'getPool(""):setCache(pc)',
    ]


def dnsdist_conf(host, port, backends, threads=None, policy="ffi", generated_by="bench/peers.py",
                 cache_entries=None, dont_age=False, console=None):
    """dnsdist's configuration: listen on host:port (UDP and TCP), balance over
    `backends`, a list of (host, port, name) plain DNS servers.  `threads`:
    listeners and TCP workers (default: the CPUs we may use).  `policy`:
    "ffi" (client stickiness, DNSDIST_STICKY_FFI) or "roundrobin" (built-in,
    no stickiness; only a fallback).  `cache_entries`: a packet cache of this
    many entries on the default pool (default: none); `dont_age`: its dontAge.
    `console`: (addr:port, base64 key) for a control socket on loopback
    (default: none)."""
    n = threads or cpus()
    lines = [
        f"-- generated by {generated_by} (settings explained in bench/peers.py, bench/README.md)",
        # Security polling sends a query for a TXT record under
        # secpoll.powerdns.com every hour, through the system resolver: off,
        # so that nothing leaves this machine.
        # reference/config.html#setSecurityPollSuffix: "Setting this to an
        # empty string disables secpoll."
        'setSecurityPollSuffix("")',
        # TCP worker threads: one per CPU.  Since 1.4 a worker is event-driven
        # and handles many connections at once, and since 1.6 all of them are
        # started at once; the default of 10 only adds threads (and, newer docs
        # warn, per-thread caches of backend connections) on a 2-CPU machine
        # with a handful of client connections.
        # advanced/tuning.html "TCP and DNS over TLS";
        # reference/tuning.html#setMaxTCPClientThreads.
        f"setMaxTCPClientThreads({n})",
        # Read up to this many UDP queries per recvmmsg() call instead of one
        # recvmsg() per query (default 1).
        # reference/tuning.html#setUDPMultipleMessagesVectorSize.
        f"setUDPMultipleMessagesVectorSize({DNSDIST_UDP_VECTOR})",
    ]
    # One listener per CPU on the same address with reusePort=true: each
    # addLocal/setLocal gets its own UDP thread (and TCP acceptor), and the
    # kernel spreads the datagrams over them; one bind is one UDP thread.
    # advanced/tuning.html "UDP and incoming DNS over HTTPS";
    # reference/config.html#addLocal (reusePort).
    # maxInFlight on the listener: queries of one TCP connection are read and
    # processed concurrently (out of order) instead of one at a time.
    # advanced/out-of-order.html; reference/config.html#addLocal (maxInFlight).
    opts = f"{{reusePort=true, maxInFlight={DNSDIST_MAX_IN_FLIGHT}}}"
    lines.append(f'setLocal("{host}:{port}", {opts})')
    for _ in range(n - 1):
        lines.append(f'addLocal("{host}:{port}", {opts})')
    for bhost, bport, name in backends:
        # Health checks: a query for a name the backend serves (not the
        # default a.root-servers.net.), so that a check asks only the local
        # backend about its own zone; once a second (the default); must
        # resolve (NOERROR).  guides/downstreams.html "Healthcheck";
        # reference/config.html#newServer (checkName, checkType,
        # checkInterval, mustResolve).
        # maxInFlight on the server: several queries of one client connection
        # go over one TCP connection to the backend instead of one connection
        # per query in flight.  The backends here read the queries of a
        # connection one after another and answer each at once, so pipelining
        # to them is safe.  advanced/out-of-order.html;
        # reference/config.html#newServer (maxInFlight).
        lines.append(
            f'newServer({{address="{bhost}:{bport}", name="{name}", '
            f'checkName="www.example.com.", checkType="A", checkInterval=1, mustResolve=true, '
            f'maxInFlight={DNSDIST_MAX_IN_FLIGHT}}})')
    # Server selection: a C++ policy or a per-thread FFI policy, never a
    # plain Lua policy, which takes the global Lua lock per query and is
    # "slow".  The built-in hashing policies (whashed, chashed) hash the
    # qname, not the client, so stickiness by client needs an FFI policy.
    # advanced/tuning.html "Rules and Lua" (table: "Lua per-thread FFI LB
    # policy: fast, no locking"); guides/serverselection.html
    # (setServerPolicyLuaFFIPerThread, new in 1.6.0).
    if policy == "ffi":
        lines.append('setServerPolicyLuaFFIPerThread("stickyByClient", [[' + DNSDIST_STICKY_FFI + ']])')
    elif policy == "roundrobin":
        lines.append("setServerPolicy(roundrobin)")
    else:
        raise ValueError(f"unknown dnsdist policy {policy!r}")
    if cache_entries:
        lines += dnsdist_cache_lines(cache_entries, dont_age)
    # Otherwise no packet cache: dnsdist has none unless newPacketCache() is
    # called and set on a pool (guides/cache.html "not enabled by default"),
    # and a cache would answer the uncached benchmarks' names without the
    # backends.
    if console:
        addr, key = console
        # The console, for `dnsdist -c -e` to read the cache's counters:
        # on loopback only, authenticated by a key made for this run.
        # reference/config.html#controlSocket, #setKey.
        lines += [f'controlSocket("{addr}")', f'setKey("{key}")']
    # No webserver or carbonServer: nothing listens or sends besides the
    # listeners above, the console if asked for, and the health checks.
    return "\n".join(lines) + "\n"


def dnsdist_argv(conf):
    """Foreground, no syslog (manpages/dnsdist.1: --supervised, --disable-syslog)."""
    return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]


def dnsdist_check_argv(conf):
    return ["dnsdist", "--check-config", "-C", str(conf)]


def dnsdist_desc(threads=None, policy="ffi", cache_entries=None, dont_age=False):
    n = threads or cpus()
    pol = ("per-thread FFI policy hashing the client address (sticky)" if policy == "ffi"
           else "setServerPolicy(roundrobin) (NOT sticky)")
    cache = (f"packet cache of {cache_entries:,} entries (maxTTL=86400, minTTL=0, temporaryFailureTTL=60, "
             f"staleTTL=60, dontAge={'true' if dont_age else 'false'}, numberOfShards={DNSDIST_CACHE_SHARDS})"
             if cache_entries else "no packet cache")
    return (f"{n} listeners (reusePort, maxInFlight {DNSDIST_MAX_IN_FLIGHT}), "
            f"{n} TCP workers, recvmmsg vector {DNSDIST_UDP_VECTOR}, {pol}, "
            f"backend maxInFlight {DNSDIST_MAX_IN_FLIGHT}, {cache}, secpoll off")


# ---------------------------------------------------------------------------
# nginx 1.22, stream module
# ---------------------------------------------------------------------------

def nginx_conf(host, port, backends, workdir, generated_by="bench/peers.py"):
    """nginx's configuration (stream module): UDP and TCP on host:port,
    balanced over `backends` (host, port, name) by a consistent hash of the
    client address; logs and pid under `workdir`."""
    servers = "".join(f"        server {h}:{p};  # {name}\n" for h, p, name in backends)
    return f"""# generated by {generated_by} (settings explained in bench/peers.py, bench/README.md)
load_module {NGINX_STREAM_SO};

# One worker process per CPU ("auto").
# https://nginx.org/en/docs/ngx_core_module.html#worker_processes
worker_processes auto;

# Bind each worker to its own CPU, so it keeps its caches.
# https://nginx.org/en/docs/ngx_core_module.html#worker_cpu_affinity
worker_cpu_affinity auto;

# Room for every connection a worker may hold (below); a connection or UDP
# session uses a descriptor on each side.
# https://nginx.org/en/docs/ngx_core_module.html#worker_rlimit_nofile
worker_rlimit_nofile 65536;

error_log {workdir}/error.log warn;
pid {workdir}/nginx.pid;

events {{
    # Connections (client and upstream sides, UDP sessions included) per
    # worker; the default of 512 is too few for a loaded proxy.
    # https://nginx.org/en/docs/ngx_core_module.html#worker_connections
    worker_connections 16384;
    # Accept all pending connections at each wake-up, not one.  In nginx
    # 1.22 the same flag makes a worker read every datagram waiting on a UDP
    # listener per wake-up, not one (src/event/ngx_event_udp.c).
    # https://nginx.org/en/docs/ngx_core_module.html#multi_accept
    multi_accept on;
    # No accept mutex: each worker has its own socket (reuseport below), so
    # the kernel already picks the worker.  "There is no need to enable
    # accept_mutex ... when using reuseport."
    # https://nginx.org/en/docs/ngx_core_module.html#accept_mutex
    accept_mutex off;
}}

stream {{
    # No access log in the stream module unless asked for
    # (https://nginx.org/en/docs/stream/ngx_stream_log_module.html#access_log).

    upstream dns_backends {{
        # Client-address stickiness: a consistent hash of the client address.
        # https://nginx.org/en/docs/stream/ngx_stream_upstream_module.html#hash
        hash $remote_addr consistent;
{servers}    }}

    server {{
        # reuseport: one listening socket per worker, the kernel spreads
        # clients over them ("Socket Sharding in NGINX",
        # https://www.nginx.com/blog/socket-sharding-nginx-release-1-9-1/).
        # https://nginx.org/en/docs/stream/ngx_stream_core_module.html#listen
        listen {host}:{port} udp reuseport;
        proxy_pass dns_backends;
        # One answer per query: a session ends as soon as its answers are
        # back instead of waiting for proxy_timeout.  nginx's DNS example
        # ("Load Balancing DNS Traffic with NGINX and NGINX Plus",
        # https://www.nginx.com/blog/load-balancing-dns-traffic-nginx-plus/).
        # https://nginx.org/en/docs/stream/ngx_stream_proxy_module.html#proxy_responses
        proxy_responses 1;
        # A session (and its upstream socket) unanswered this long is closed;
        # the benchmarks' clients give up after 2 s (dnsperf -t 2).
        # https://nginx.org/en/docs/stream/ngx_stream_proxy_module.html#proxy_timeout
        proxy_timeout 2s;
        # proxy_requests stays 0 (the default): all datagrams from one client
        # address and port share one session and one upstream socket rather
        # than a session per datagram.
        # https://nginx.org/en/docs/stream/ngx_stream_proxy_module.html#proxy_requests
    }}

    server {{
        listen {host}:{port} reuseport;
        proxy_pass dns_backends;
        # A TCP connection is a byte pipe to one backend connection; close
        # it when idle as the DNS clients here would (RFC 7766 suggests
        # seconds).  https://nginx.org/en/docs/stream/ngx_stream_proxy_module.html#proxy_timeout
        proxy_timeout 10s;
        # tcp_nodelay is on by default in stream (small DNS messages go out
        # at once). https://nginx.org/en/docs/stream/ngx_stream_core_module.html#tcp_nodelay
    }}
}}
"""


def nginx_argv(conf, workdir):
    return ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]


def nginx_desc():
    return ("stream module, worker_processes auto, worker_cpu_affinity auto, reuseport, "
            "accept_mutex off, multi_accept on, worker_connections 16384, "
            "hash $remote_addr consistent, UDP proxy_responses 1 + proxy_timeout 2s")
