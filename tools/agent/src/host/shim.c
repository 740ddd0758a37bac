/* The host build's port: SMCs, memory and realm entries go to the Python model through the shim. */
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/port.h"
#include "../core/proto.h"
#include "../core/realm.h"

static int shim_fd = -1;
static uint64_t caps, boot_id;
static uint8_t info[AGENT_MAX_FRAME];
static size_t info_len;
static uint8_t buffer[AGENT_MAX_FRAME + REALM_PAGE_SIZE + 64];

static void die(const char *what)
{
	fprintf(stderr, "cca-hil-agent-host: shim %s: %s\n", what, errno ? strerror(errno) : "closed");
	exit(3);
}

static void put_all(const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(shim_fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("write");
		p += k;
		n -= (size_t)k;
	}
}

static void get_all(uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = read(shim_fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = 0;
			die("read");
		}
		p += k;
		n -= (size_t)k;
	}
}

static void le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t from_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

size_t shim_call(uint8_t op, const uint8_t *body, size_t n, uint8_t *answer, size_t cap)
{
	uint8_t head[5];
	head[0] = op;
	le(head + 1, n, 4);
	put_all(head, 5);
	put_all(body, n);
	get_all(head, 4);
	size_t len = (size_t)from_le(head, 4);
	if (len > cap) {
		errno = EPROTO;
		die("answer too long");
	}
	get_all(answer, len);
	return len;
}

void shim_init(int fd)
{
	shim_fd = fd;
	size_t n = shim_call(SHIM_PLATFORM, NULL, 0, buffer, sizeof(buffer));
	if (n < 16 || n - 16 > sizeof(info)) {
		errno = EPROTO;
		die("platform answer");
	}
	caps = from_le(buffer, 8);
	boot_id = from_le(buffer + 8, 8);
	info_len = n - 16;
	memcpy(info, buffer + 16, info_len);
}

uint64_t port_caps(void)
{
	return caps;
}

uint64_t port_boot_id(void)
{
	return boot_id;
}

const char *port_agent_name(void)
{
	return "cca-hil agent 1.0 (host build, model shim)";
}

void port_info(struct wbuf *w)
{
	w_bytes(w, info, info_len);
}

void port_smc(uint64_t regs[SMC_REGS])
{
	uint8_t body[8 * SMC_REGS];
	for (unsigned i = 0; i < SMC_REGS; i++)
		le(body + 8 * i, regs[i], 8);
	size_t n = shim_call(SHIM_SMC, body, sizeof(body), buffer, sizeof(buffer));
	if (n != sizeof(body)) {
		errno = EPROTO;
		die("SMC answer");
	}
	for (unsigned i = 0; i < SMC_REGS; i++)
		regs[i] = from_le(buffer + 8 * i, 8);
}

static char description[MAX_DESCRIPTION + 1];

/* status u8 then, on a fault: ec u8, esr u64, far u64, gpf u8, description length u8 and bytes. */
static bool outcome(const uint8_t *p, size_t n, struct fault *fault)
{
	if (n < 1) {
		errno = EPROTO;
		die("memory answer");
	}
	if (!p[0])
		return true;
	if (n < 20 || p[19] > MAX_DESCRIPTION || n < 20u + p[19]) {
		errno = EPROTO;
		die("fault answer");
	}
	fault->ec = p[1];
	fault->esr = from_le(p + 2, 8);
	fault->far = from_le(p + 10, 8);
	fault->gpf = p[18] != 0;
	/* The model's own words for the fault it raised (on a target: decoded from the ESR). */
	memcpy(description, p + 20, p[19]);
	description[p[19]] = 0;
	fault->description = description;
	return false;
}

bool port_read(uint64_t pa, uint8_t *dst, size_t size, struct fault *fault)
{
	uint8_t body[12];
	le(body, pa, 8);
	le(body + 8, size, 4);
	size_t n = shim_call(SHIM_READ, body, sizeof(body), buffer, sizeof(buffer));
	if (!outcome(buffer, n, fault))
		return false;
	if (n != 1 + size) {
		errno = EPROTO;
		die("read answer");
	}
	memcpy(dst, buffer + 1, size);
	return true;
}

bool port_write(uint64_t pa, const uint8_t *src, size_t size, struct fault *fault)
{
	static uint8_t body[8 + AGENT_MAX_FRAME];
	le(body, pa, 8);
	memcpy(body + 8, src, size);
	size_t n = shim_call(SHIM_WRITE, body, 8 + size, buffer, sizeof(buffer));
	return outcome(buffer, n, fault);
}

bool port_fill(uint64_t pa, uint64_t size, const uint8_t *pattern, unsigned plen, struct fault *fault)
{
	uint8_t body[8 + 8 + 1 + 8];
	le(body, pa, 8);
	le(body + 8, size, 8);
	body[16] = (uint8_t)plen;
	memcpy(body + 17, pattern, plen);
	size_t n = shim_call(SHIM_FILL, body, 17 + plen, buffer, sizeof(buffer));
	return outcome(buffer, n, fault);
}

bool port_access(uint64_t pa, bool store, unsigned size_log2, uint64_t *value, struct fault *fault)
{
	uint8_t body[18];
	le(body, pa, 8);
	body[8] = store;
	body[9] = (uint8_t)size_log2;
	le(body + 10, *value, 8);
	size_t n = shim_call(SHIM_ACCESS, body, sizeof(body), buffer, sizeof(buffer));
	if (!outcome(buffer, n, fault))
		return false;
	if (n != 9) {
		errno = EPROTO;
		die("access answer");
	}
	*value = from_le(buffer + 1, 8);
	return true;
}

void port_realm_enter(uint64_t rec, uint64_t run, struct realm_page *shared, uint64_t regs[5])
{
	static uint8_t body[16 + REALM_PAGE_SIZE];
	le(body, rec, 8);
	le(body + 8, run, 8);
	memcpy(body + 16, shared, REALM_PAGE_SIZE);
	size_t n = shim_call(SHIM_REALM, body, sizeof(body), buffer, sizeof(buffer));
	if (n != 40 + REALM_PAGE_SIZE) {
		errno = EPROTO;
		die("realm answer");
	}
	for (unsigned i = 0; i < 5; i++)
		regs[i] = from_le(buffer + 8 * i, 8);
	memcpy(shared, buffer + 40, REALM_PAGE_SIZE);
}

void port_executing(uint32_t session, uint16_t seq)
{
	uint8_t body[6];
	le(body, session, 4);
	le(body + 4, seq, 2);
	(void)shim_call(SHIM_EXECUTING, body, sizeof(body), buffer, sizeof(buffer));
}
