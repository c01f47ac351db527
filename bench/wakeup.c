/*
 * What a wake-up costs on this machine: the unit every figure of
 * bench/curve.py at low load is made of.
 *
 * Two processes pass one byte back and forth over a pair of pipes, as a
 * proxy and its backend pass a query and its answer at low load: each
 * blocks in read() until the other writes.  The program measures the CPU
 * time (CLOCK_PROCESS_CPUTIME_ID) each side spends per round trip in
 * two placements:
 *
 *   same CPU       both pinned to CPU 0: a write makes the reader
 *                  runnable on the writer's own CPU, and it runs when the
 *                  writer blocks (a switch, no inter-processor interrupt);
 *   across CPUs    pinned to CPUs 0 and 1: every write wakes a process
 *                  that sleeps on the other, idle CPU (an IPI to a halted
 *                  vCPU on a VM).
 *
 * Between them they bound what one hop of a query (a wake-up received and
 * one sent) costs each process.  No DNS, no sockets: only the scheduler.
 *
 *     cc -O2 -o wakeup bench/wakeup.c && ./wakeup [round trips]
 *
 * Needs two CPUs.  Prints one line per placement.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		perror("sched_setaffinity");
		exit(1);
	}
}

/* One placement: returns through *parent_us and *child_us the CPU time of
 * each side per round trip, and the wall time per round trip. */
static double measure(int parent_cpu, int child_cpu, long n,
		      double *parent_us, double *child_us)
{
	int ping[2], pong[2], report[2];
	char byte = 'x';
	if (pipe(ping) || pipe(pong) || pipe(report)) {
		perror("pipe");
		exit(1);
	}
	pin(parent_cpu);
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		exit(1);
	}
	if (child == 0) {
		pin(child_cpu);
		double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);
		for (long i = 0; i < n; i++) {
			if (read(ping[0], &byte, 1) != 1 || write(pong[1], &byte, 1) != 1)
				_exit(1);
		}
		cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu;
		_exit(write(report[1], &cpu, sizeof(cpu)) == sizeof(cpu) ? 0 : 1);
	}
	double wall = clock_s(CLOCK_MONOTONIC), cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	for (long i = 0; i < n; i++) {
		if (write(ping[1], &byte, 1) != 1) {
			perror("write");
			exit(1);
		}
		if (read(pong[0], &byte, 1) != 1) {
			perror("read");
			exit(1);
		}
	}
	cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu;
	wall = clock_s(CLOCK_MONOTONIC) - wall;
	double child_cpu_s = 0;
	if (read(report[0], &child_cpu_s, sizeof(child_cpu_s)) != sizeof(child_cpu_s)) {
		fprintf(stderr, "the child did not report\n");
		exit(1);
	}
	waitpid(child, NULL, 0);
	for (int i = 0; i < 2; i++) {
		close(ping[i]);
		close(pong[i]);
		close(report[i]);
	}
	*parent_us = cpu / n * 1e6;
	*child_us = child_cpu_s / n * 1e6;
	return wall / n * 1e6;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 50000;
	if (n < 1 || n > 10000000) {
		fprintf(stderr, "usage: wakeup [round trips, 1..10000000]\n");
		return 1;
	}
	static const struct {
		const char *name;
		int parent_cpu, child_cpu;
	} placements[] = {
		{"same CPU", 0, 0},
		{"across CPUs", 0, 1},
	};
	printf("%ld round trips each; CPU time per round trip\n", n);
	for (size_t i = 0; i < sizeof(placements) / sizeof(placements[0]); i++) {
		double parent_us, child_us;
		double wall_us = measure(placements[i].parent_cpu, placements[i].child_cpu, n,
					 &parent_us, &child_us);
		printf("%-12s wall %7.2f us   first process %6.2f us   second %6.2f us\n",
		       placements[i].name, wall_us, parent_us, child_us);
	}
	return 0;
}
