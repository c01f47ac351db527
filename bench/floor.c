/*
 * The floor of bench/curve.py: the least CPU this machine can spend
 * answering a UDP DNS query.
 *
 * One thread, one UDP socket, blocking recvmmsg(MSG_WAITFORONE): one
 * wake-up per batch of datagrams that are ready (one datagram at low
 * rates), one receive, then one sendmmsg for the whole batch.  A query is
 * "answered" by setting QR in its header and sending it back unchanged,
 * which dnsperf counts as a response (NOERROR).  No parsing, no state, no
 * timers: whatever a proxy spends above this per query is its own work.
 *
 *     cc -O2 -o floor bench/floor.c
 *     ./floor 127.0.0.1 16700
 *
 * Prints "floor ready" on stdout once bound.  Exits on SIGTERM/SIGINT
 * (default action).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VLEN 64
#define BUFSZ 4096

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: floor ADDR PORT\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "floor: bad address %s\n", argv[1]);
		return 2;
	}
	/* The same receive buffer the balancer asks for (--udp-recv-buffer). */
	int rcvbuf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		perror("bind");
		return 1;
	}

	static char bufs[VLEN][BUFSZ];
	static struct sockaddr_in peers[VLEN];
	static struct iovec iov[VLEN];
	static struct mmsghdr msgs[VLEN];

	printf("floor ready\n");
	fflush(stdout);

	for (;;) {
		for (int i = 0; i < VLEN; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = BUFSZ;
			memset(&msgs[i], 0, sizeof msgs[i]);
			msgs[i].msg_hdr.msg_name = &peers[i];
			msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		int n = recvmmsg(fd, msgs, VLEN, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("recvmmsg");
			return 1;
		}
		int out = 0;
		for (int i = 0; i < n; i++) {
			unsigned int len = msgs[i].msg_len;
			if (len < 12 || (bufs[i][2] & 0x80))
				continue; /* not a query: drop */
			bufs[i][2] |= 0x80; /* QR: this is the answer */
			iov[i].iov_len = len;
			if (out != i)
				msgs[out] = msgs[i];
			out++;
		}
		int sent = 0;
		while (sent < out) {
			int r = sendmmsg(fd, msgs + sent, out - sent, 0);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				break; /* e.g. ENOBUFS: drop the rest, as UDP may */
			}
			sent += r;
		}
	}
}
