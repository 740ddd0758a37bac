/*
 * The host build of the agent: the protocol core of the target, with its UART on a pty and
 * its SMCs and memory accesses executed by the model behind the shim (shim.c).
 *
 *   cca-hil-agent-host --uart-fd N --shim-fd M
 *
 * Both descriptors are inherited from the shim process (cca_hil/tools/agent_shim.py): N is the
 * pty's master (the host opens the slave like any serial device), M a socket to the shim. The
 * banner is printed whenever a host attaches to the pty, as a board prints it after a reset.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/proto.h"
#include "shim.h"

#define GAP_MS 20 /* silence that ends a partly received frame */
#define IDLE_MS 20 /* how often to look whether a host has attached */
#define BANNER_DELAY_MS 200

static struct agent agent;

static void usage(void)
{
	fprintf(stderr, "usage: cca-hil-agent-host --uart-fd N --shim-fd M\n");
	exit(2);
}

static int fd_arg(const char *value)
{
	char *end;
	long fd = strtol(value, &end, 10);
	if (*value == 0 || *end != 0 || fd < 0 || fd > 65535)
		usage();
	return (int)fd;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* no host on the line: what is sent is lost, as on a UART */
		p += k;
		n -= (size_t)k;
	}
}

static void sleep_ms(long ms)
{
	struct timespec t = {0, ms * 1000000L};
	nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
	int uart = -1, shim = -1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--uart-fd"))
			uart = fd_arg(argv[i + 1]);
		else if (!strcmp(argv[i], "--shim-fd"))
			shim = fd_arg(argv[i + 1]);
		else
			usage();
	}
	if (uart < 0 || shim < 0 || argc % 2 == 0)
		usage();
	shim_init(shim);
	agent_init(&agent);

	char banner[96];
	snprintf(banner, sizeof(banner), "cca-hil agent %s (host build) boot %llu: ready\r\n", AGENT_VERSION,
		 (unsigned long long)port_boot_id());
	int attached = 0;
	uint8_t in[4096];
	for (;;) {
		struct pollfd p = {.fd = uart, .events = POLLIN};
		int ready = poll(&p, 1, agent.rx.in_frame ? GAP_MS : 1000);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0)
			return 3;
		if (p.revents & POLLHUP) {
			/* No host has the pty open: wait for one, then greet it. */
			attached = 0;
			rx_init(&agent.rx, AGENT_MAX_FRAME);
			sleep_ms(IDLE_MS);
			continue;
		}
		if (!attached) {
			/* pySerial empties the input while it opens a port: greet a moment later. */
			attached = 1;
			sleep_ms(BANNER_DELAY_MS);
			write_all(uart, (const uint8_t *)banner, strlen(banner));
		}
		const uint8_t *out;
		size_t len;
		if (ready == 0) {
			agent_event(&agent, rx_silence(&agent.rx), &out, &len);
			write_all(uart, out, len);
			continue;
		}
		ssize_t n = read(uart, in, sizeof(in));
		if (n <= 0) {
			sleep_ms(IDLE_MS);
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			enum rx_event ev = rx_feed(&agent.rx, in[i]);
			if (ev == RX_NONE)
				continue;
			agent_event(&agent, ev, &out, &len);
			write_all(uart, out, len);
		}
	}
}
