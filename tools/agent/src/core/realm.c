/* REALM_RUN on the agent's side: parse, stage in the shared page, enter, answer (§6.4). */
#include "realm.h"

#include "port.h"
#include "proto.h"

static struct realm_page page __attribute__((aligned(4096)));

uint64_t realm_page_address(void)
{
	return (uint64_t)(uintptr_t)&page;
}

int realm_run(const uint8_t *payload, size_t n, struct wbuf *reply, char *msg, size_t cap)
{
	struct rbuf r;
	struct realm_action action;
	struct text t;
	t_init(&t, msg, cap);
	r_init(&r, payload, n);
	uint64_t rec = r_uvarint(&r);
	uint64_t run = r_uvarint(&r);
	uint64_t count = r_uvarint(&r);
	if (r.bad || count > n) {
		t_str(&t, "malformed REALM_RUN header");
		return ERR_MALFORMED;
	}
	size_t first = r.pos;
	for (uint64_t i = 0; i < count; i++) {
		if (!realm_action_decode(&r, &action)) {
			t_str(&t, "malformed realm action ");
			t_dec(&t, i + 1);
			return ERR_MALFORMED;
		}
	}
	if (r_remaining(&r)) {
		t_str(&t, "trailing bytes after the realm actions");
		return ERR_MALFORMED;
	}
	size_t length = r.pos - first;
	if (length > REALM_ACTIONS_MAX) {
		t_str(&t, "realm actions exceed the shared page");
		return ERR_TOO_LARGE;
	}
	page.magic = REALM_PAGE_MAGIC;
	page.generation++;
	page.count = (uint32_t)count;
	page.length = (uint32_t)length;
	page.started = 0;
	page.nobs = 0;
	page.obs_len = 0;
	mem_copy(page.actions, payload + first, length);

	uint64_t regs[5] = {0};
	port_realm_enter(rec, run, &page, regs);

	size_t obs_len = page.obs_len <= REALM_OBS_MAX ? page.obs_len : REALM_OBS_MAX;
	w_regs(reply, regs, 5);
	w_uvarint(reply, page.started);
	w_uvarint(reply, page.nobs);
	w_bytes(reply, page.obs, obs_len);
	return 0;
}
