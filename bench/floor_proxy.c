/*
 * The proxy floor of bench/curve.py: the least CPU a proxy that speaks the
 * balancer protocol (docs/protocol.md) can spend on this machine relaying
 * a query to a backend and its answer back to the client, over UDP and
 * over TCP.
 *
 * bench/floor.c is the least a server can spend answering a query; a
 * proxy makes two hops of every query, so "twice the floor" is what the
 * issue-12 targets measure the balancer against.  This program says what
 * the second hop really costs when nothing but the hop is done: one
 * thread, one UDP socket, one AF_UNIX connection per backend (opened with
 * CLIENT_HELLO, SERVER_HELLO awaited), one epoll set.  Each wake-up either
 * takes every datagram the UDP socket holds (recvmmsg) and sends each to
 * its client's backend as one INBOUND_UDP frame (one send), or reads what
 * a backend has sent (one recv) and sends every whole OUTBOUND_UDP frame
 * in it to its client (one sendmmsg).  Those are the system calls
 * mname-balancer makes per query at low load, and there is nothing else:
 * no in-flight table, no timeouts, no heartbeats, no checks on what a
 * backend sends, no runtime.  What mname-balancer spends above this is
 * its own code and tokio's.
 *
 * Over TCP, on the same address and port, it accepts each client
 * connection and opens an AF_UNIX session to the client's backend with
 * INBOUND_TCP, waiting (blocking: once per connection) for INBOUND_TCP_OK;
 * then each chunk read from either side is written whole to the other
 * (one read, one write), as nginx's stream proxy relays it.  That is the
 * least a proxy that reaches node-mname through its balancer socket can do
 * over TCP, and node-mname's balancer path (lib/balancer.js passes every
 * chunk of a session through a stream.Transform) is part of its cost.
 *
 * With -y it also does what mname-balancer does when a read from a backend
 * ends inside a frame (node-mname writes each answer's header and message
 * with two writes): it sends the answers already whole, calls sched_yield
 * once and reads that backend again, rather than sleep until the rest
 * wakes it.  bench/curve.py --floor-proxy-yield runs it so beside the
 * plain proxy floor, to say whether that yield is what a proxy needs in
 * front of node-mname (it is not: bench/results/low-rate-profile.md).
 *
 * With -w N it runs N such proxies, as nginx runs its workers for the job
 * (bench/peers.py: worker_processes auto, worker_cpu_affinity auto, listen
 * ... reuseport): a process each, pinned to CPU i, with sockets of their
 * own bound with SO_REUSEPORT (the kernel spreads the clients over them)
 * and connections of their own to the backends.  bench/curve.py
 * --floor-proxy-workers runs it so, one worker per CPU, to say whether
 * what keeps a proxy above nginx is having one thread.
 *
 * With -t it takes dnsdist's layout instead (bench/peers.py; UDP only):
 * the main thread blocked in recvmmsg on the UDP socket, sending each
 * query to its backend, and a thread per backend blocked in recv, sending
 * each answer on; no epoll.  bench/curve.py --floor-proxy-threads runs it
 * so, to say whether sleeping in epoll is what keeps a proxy above 1.3x
 * twice the floor in front of node-mname.
 *
 * Clients are pinned to backends round-robin in the order they are first
 * seen, as mname-balancer pins them (with -w, in a table the workers
 * share).  A backend that closes its connection or sends a frame this
 * program does not know ends it (exit 1): it is a measuring instrument,
 * not a balancer.
 *
 *     cc -O2 -o floor_proxy bench/floor_proxy.c
 *     ./floor_proxy [-y] [-w N] 127.0.0.1 16800 /path/to/socket ...
 *     ./floor_proxy -t 127.0.0.1 16800 /path/to/socket ...
 *
 * Prints "floor proxy ready" on stdout once every backend has said hello
 * (to every worker).  Exits on SIGTERM/SIGINT (default action); workers
 * go with their parent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define VLEN 64
#define MAX_BACKENDS 16
#define MAX_CLIENTS 1024
#define DGRAM_MAX 1500
#define FRAME_HDR 16
#define BACKEND_BUF (1 << 16)

#define MAX_SESSIONS 256
#define TCP_CHUNK (1 << 16)
/* epoll data of a TCP session's socket: TAG | slot << 1 | side */
#define TCP_TAG (1u << 30)
#define LISTENER (MAX_BACKENDS + 1)

enum { CLIENT_HELLO = 1, INBOUND_UDP = 2, INBOUND_TCP = 3, SERVER_HELLO = 1001, OUTBOUND_UDP = 1002,
       INBOUND_TCP_OK = 1003, SERVER_HEARTBEAT = 1004 };

/* A client's TCP connection and its AF_UNIX session to the backend. */
struct session {
	int fd[2]; /* [0] client, [1] backend; -1 when the slot is free */
};

static struct session sessions[MAX_SESSIONS];

struct backend {
	const char *path;
	int fd;
	int udp; /* -t: the socket its thread sends answers on */
	size_t have;
	unsigned char buf[BACKEND_BUF];
};

static struct backend backends[MAX_BACKENDS];
static int n_backends;
/* -t: blocking threads, no epoll (UDP only). */
static int threaded;
/*
 * Clients in the order first seen; with several workers (-w) the table is
 * shared (mapped before they are forked), so that a client is pinned to
 * the same backend whichever worker the kernel gives its packets to.
 */
struct pins {
	char lock;
	int n_clients;
	uint32_t clients[MAX_CLIENTS];
};

static struct pins own_pins;
static struct pins *pins = &own_pins;
/* -w: the table is shared, and taken under its lock. */
static int pins_shared;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

/* The backend a client address is pinned to: round-robin at first sight. */
static int backend_of(uint32_t addr)
{
	int found = -1;
	while (pins_shared && __atomic_test_and_set(&pins->lock, __ATOMIC_ACQUIRE))
		;
	for (int i = 0; i < pins->n_clients && found < 0; i++)
		if (pins->clients[i] == addr)
			found = i;
	if (found < 0 && pins->n_clients < MAX_CLIENTS) {
		found = pins->n_clients++;
		pins->clients[found] = addr;
	}
	if (pins_shared)
		__atomic_clear(&pins->lock, __ATOMIC_RELEASE);
	return (found < 0 ? (int)(addr % MAX_CLIENTS) : found) % n_backends;
}

static void connect_backend(const char *path)
{
	if (n_backends == MAX_BACKENDS || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "floor_proxy: too many backends, or a path too long: %s\n", path);
		exit(1);
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die(path);
	unsigned char hello[4];
	put_le32(hello, CLIENT_HELLO);
	if (write(fd, hello, 4) != 4)
		die("write CLIENT_HELLO");
	/* Blocking: the backend's first four bytes are its SERVER_HELLO. */
	size_t got = 0;
	while (got < 4) {
		ssize_t r = read(fd, hello + got, 4 - got);
		if (r <= 0)
			die("read SERVER_HELLO");
		got += r;
	}
	if (get_le32(hello) != SERVER_HELLO) {
		fprintf(stderr, "floor_proxy: %s answered hello with type %u\n", path, get_le32(hello));
		exit(1);
	}
	backends[n_backends].path = path;
	backends[n_backends++].fd = fd;
}

/* Every datagram the UDP socket holds, each sent to its backend. */
static void relay_queries(int udp)
{
	static unsigned char dgrams[VLEN][FRAME_HDR + DGRAM_MAX];
	static struct mmsghdr msgs[VLEN];
	static struct iovec iovs[VLEN];
	static struct sockaddr_in from[VLEN];
	/* With -t the socket blocks: wait for the first datagram, take the rest ready. */
	int flags = threaded ? MSG_WAITFORONE : MSG_DONTWAIT;
	for (;;) {
		for (int i = 0; i < VLEN; i++) {
			iovs[i] = (struct iovec){dgrams[i] + FRAME_HDR, DGRAM_MAX};
			msgs[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof(from[i]),
							  .msg_iov = &iovs[i], .msg_iovlen = 1};
		}
		int n = recvmmsg(udp, msgs, VLEN, flags, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			die("recvmmsg");
		}
		for (int i = 0; i < n; i++) {
			uint32_t addr = ntohl(from[i].sin_addr.s_addr);
			unsigned char *frame = dgrams[i];
			put_le32(frame, INBOUND_UDP);
			put_le32(frame + 4, addr);
			put_le32(frame + 8, ntohs(from[i].sin_port));
			put_le32(frame + 12, msgs[i].msg_len);
			struct backend *b = &backends[backend_of(addr)];
			/* A full socket drops the query, as a full UDP socket would. */
			if (send(b->fd, frame, FRAME_HDR + msgs[i].msg_len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
			    errno != EAGAIN)
				die("send to backend");
		}
		if (n < VLEN && !threaded)
			return;
	}
}

/*
 * One read from a backend; every whole answer in its buffer sent on.
 * Returns whether the read ended inside a frame.
 */
static int relay_answers(int udp, struct backend *b)
{
	/* Per thread: with -t each backend has a thread of its own. */
	static __thread struct mmsghdr msgs[VLEN];
	static __thread struct iovec iovs[VLEN];
	static __thread struct sockaddr_in to[VLEN];
	ssize_t r = recv(b->fd, b->buf + b->have, sizeof(b->buf) - b->have, threaded ? 0 : MSG_DONTWAIT);
	if (r == 0) {
		fprintf(stderr, "floor_proxy: a backend closed its connection\n");
		exit(1);
	}
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		die("recv from backend");
	}
	b->have += r;
	size_t at = 0;
	int k = 0;
	while (b->have - at >= 4) {
		uint32_t type = get_le32(b->buf + at);
		if (type == SERVER_HEARTBEAT) {
			at += 4;
			continue;
		}
		if (type != OUTBOUND_UDP) {
			fprintf(stderr, "floor_proxy: unexpected frame type %u\n", type);
			exit(1);
		}
		if (b->have - at < FRAME_HDR)
			break;
		uint32_t len = get_le32(b->buf + at + 12);
		if (len > DGRAM_MAX) {
			fprintf(stderr, "floor_proxy: answer of %u bytes\n", len);
			exit(1);
		}
		if (b->have - at < FRAME_HDR + len)
			break;
		to[k] = (struct sockaddr_in){.sin_family = AF_INET,
					     .sin_port = htons(get_le32(b->buf + at + 8)),
					     .sin_addr.s_addr = htonl(get_le32(b->buf + at + 4))};
		iovs[k] = (struct iovec){b->buf + at + FRAME_HDR, len};
		msgs[k].msg_hdr = (struct msghdr){.msg_name = &to[k], .msg_namelen = sizeof(to[k]),
						  .msg_iov = &iovs[k], .msg_iovlen = 1};
		at += FRAME_HDR + len;
		if (++k == VLEN) {
			sendmmsg(udp, msgs, k, MSG_DONTWAIT);
			k = 0;
		}
	}
	if (k > 0)
		sendmmsg(udp, msgs, k, MSG_DONTWAIT);
	memmove(b->buf, b->buf + at, b->have - at);
	b->have -= at;
	return b->have > 0;
}


/* Write all of buf to fd, waiting (poll) when the socket is full. */
static int write_all(int fd, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = {.fd = fd, .events = POLLOUT};
				poll(&p, 1, 1000);
				continue;
			}
			return -1;
		}
		buf += w;
		len -= w;
	}
	return 0;
}

static void close_session(int ep, struct session *t)
{
	for (int side = 0; side < 2; side++) {
		if (t->fd[side] >= 0) {
			epoll_ctl(ep, EPOLL_CTL_DEL, t->fd[side], NULL);
			close(t->fd[side]);
			t->fd[side] = -1;
		}
	}
}

/*
 * Every connection waiting on the listener: each gets its own AF_UNIX
 * connection to its client's backend, opened with INBOUND_TCP and the
 * backend's INBOUND_TCP_OK (awaited blocking: a session opens once per
 * dnsperf connection, not per query).
 */
static void accept_sessions(int ep, int listener)
{
	for (;;) {
		struct sockaddr_in from;
		socklen_t fromlen = sizeof(from);
		int cfd = accept4(listener, (struct sockaddr *)&from, &fromlen, SOCK_NONBLOCK);
		if (cfd < 0)
			return;
		int slot = -1;
		for (int i = 0; i < MAX_SESSIONS && slot < 0; i++)
			if (sessions[i].fd[0] < 0)
				slot = i;
		uint32_t addr = ntohl(from.sin_addr.s_addr);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		strcpy(sa.sun_path, backends[backend_of(addr)].path);
		int bfd = slot < 0 ? -1 : socket(AF_UNIX, SOCK_STREAM, 0);
		unsigned char frame[12];
		put_le32(frame, INBOUND_TCP);
		put_le32(frame + 4, addr);
		put_le32(frame + 8, ntohs(from.sin_port));
		unsigned char ok[4];
		size_t got = 0;
		if (bfd >= 0 && connect(bfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		    write_all(bfd, frame, sizeof(frame)) == 0) {
			while (got < 4) {
				ssize_t r = read(bfd, ok + got, 4 - got);
				if (r <= 0)
					break;
				got += r;
			}
		}
		if (got < 4 || get_le32(ok) != INBOUND_TCP_OK) {
			fprintf(stderr, "floor_proxy: a TCP session could not be opened\n");
			close(cfd);
			if (bfd >= 0)
				close(bfd);
			continue;
		}
		fcntl(bfd, F_SETFL, O_NONBLOCK);
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		sessions[slot].fd[0] = cfd;
		sessions[slot].fd[1] = bfd;
		for (int side = 0; side < 2; side++) {
			struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TCP_TAG | slot << 1 | side};
			epoll_ctl(ep, EPOLL_CTL_ADD, sessions[slot].fd[side], &ev);
		}
	}
}

/* One read from one side of a session, written whole to the other side. */
static void relay_stream(int ep, uint32_t tag)
{
	static unsigned char chunk[TCP_CHUNK];
	struct session *t = &sessions[(tag & ~TCP_TAG) >> 1];
	int side = tag & 1;
	if (t->fd[side] < 0)
		return;
	ssize_t r = recv(t->fd[side], chunk, sizeof(chunk), MSG_DONTWAIT);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0 || write_all(t->fd[!side], chunk, r) < 0)
		close_session(ep, t);
}

/* -t: a backend's thread, blocked in recv until it sends. */
static void *answer_thread(void *arg)
{
	struct backend *b = arg;
	int udp = b->udp;
	for (;;)
		relay_answers(udp, b);
	return NULL;
}

/*
 * -t: dnsdist's layout (bench/peers.py): this thread blocked in recvmmsg on
 * the UDP socket, sending each query to its backend, and a thread per
 * backend blocked in recv, sending the answers on.  No epoll, no TCP.
 */
static void serve_threaded(int udp)
{
	for (int i = 0; i < n_backends; i++) {
		pthread_t t;
		backends[i].udp = udp;
		if (pthread_create(&t, NULL, answer_thread, &backends[i]) != 0)
			die("pthread_create");
	}
	printf("floor proxy ready\n");
	fflush(stdout);
	for (;;)
		relay_queries(udp);
}

/*
 * One proxy: connect the backends, bind the sockets (with SO_REUSEPORT
 * when there are several workers, so that the kernel spreads clients over
 * them), say ready and relay until killed.  `ready_fd` >= 0: say ready by
 * writing one byte there (to the parent of the workers), else on stdout.
 */
static void serve(int argc, char **argv, int split_yield, int reuseport, int ready_fd)
{
	for (int i = 3; i < argc; i++)
		connect_backend(argv[i]);

	int one = 1;
	int udp = socket(AF_INET, SOCK_DGRAM | (threaded ? 0 : SOCK_NONBLOCK), 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	if (udp < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 ||
	    (reuseport && setsockopt(udp, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(udp, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("udp socket");
	if (threaded)
		serve_threaded(udp);
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MAX_BACKENDS};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, udp, &ev) < 0)
		die("epoll_ctl");
	for (int i = 0; i < n_backends; i++) {
		ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = i};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, backends[i].fd, &ev) < 0)
			die("epoll_ctl");
	}
	for (int i = 0; i < MAX_SESSIONS; i++)
		sessions[i].fd[0] = sessions[i].fd[1] = -1;
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(listener, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listener, 128) < 0)
		die("tcp listener");
	ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = LISTENER};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0)
		die("epoll_ctl");
	if (ready_fd >= 0) {
		if (write(ready_fd, "r", 1) != 1)
			die("write ready");
		close(ready_fd);
	} else {
		printf("floor proxy ready\n");
		fflush(stdout);
	}

	struct epoll_event ready[64];
	for (;;) {
		int n = epoll_wait(ep, ready, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			if (ready[i].data.u32 & TCP_TAG)
				relay_stream(ep, ready[i].data.u32);
			else if (ready[i].data.u32 == LISTENER)
				accept_sessions(ep, listener);
			else if (ready[i].data.u32 == MAX_BACKENDS)
				relay_queries(udp);
			else if (relay_answers(udp, &backends[ready[i].data.u32]) && split_yield) {
				/*
				 * As mname-balancer does (src/shell/mod.rs,
				 * finish_frames): node-mname writes an answer's
				 * header and message with two writes, so give the
				 * CPU away once and read the rest, rather than
				 * sleep until it wakes this process again.
				 */
				sched_yield();
				relay_answers(udp, &backends[ready[i].data.u32]);
			}
		}
	}
}

int main(int argc, char **argv)
{
	int split_yield = 0, workers = 1;
	for (;;) {
		if (argc > 1 && strcmp(argv[1], "-y") == 0) {
			split_yield = 1;
			argv++;
			argc--;
		} else if (argc > 1 && strcmp(argv[1], "-t") == 0) {
			threaded = 1;
			argv++;
			argc--;
		} else if (argc > 2 && strcmp(argv[1], "-w") == 0) {
			workers = atoi(argv[2]);
			argv += 2;
			argc -= 2;
		} else {
			break;
		}
	}
	if (argc < 4 || workers < 1 || workers > 64 || (threaded && (workers > 1 || split_yield))) {
		fprintf(stderr, "usage: floor_proxy [-y] [-w WORKERS] HOST PORT SOCKET...\n"
				"       floor_proxy -t HOST PORT SOCKET...\n");
		return 1;
	}
	if (workers == 1)
		serve(argc, argv, split_yield, 0, -1);

	/*
	 * Several workers, as nginx runs for the job (bench/peers.py:
	 * worker_processes auto, worker_cpu_affinity auto, listen ...
	 * reuseport): a process per worker, pinned to CPU i, each with its own
	 * sockets and its own connections to the backends.  The parent says
	 * ready once every worker has, and exits (taking them with it) when
	 * any of them does or when it is killed.
	 */
	pins = mmap(NULL, sizeof(*pins), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pins == MAP_FAILED)
		die("mmap");
	pins_shared = 1;
	int ready[2];
	if (pipe(ready) < 0)
		die("pipe");
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	for (int w = 0; w < workers; w++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			close(ready[0]);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() == 1)
				exit(1);
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpus > 0 ? w % cpus : 0, &set);
			if (sched_setaffinity(0, sizeof(set), &set) < 0)
				die("sched_setaffinity");
			serve(argc, argv, split_yield, 1, ready[1]);
		}
	}
	close(ready[1]);
	char byte;
	for (int w = 0; w < workers; w++)
		if (read(ready[0], &byte, 1) != 1) {
			fprintf(stderr, "floor_proxy: a worker did not start\n");
			return 1;
		}
	printf("floor proxy ready (%d workers)\n", workers);
	fflush(stdout);
	wait(NULL);
	fprintf(stderr, "floor_proxy: a worker exited\n");
	return 1;
}
