/* The agent's side of the link: session, replay cache and dispatch (docs/agent-protocol.md §6, §8). */
#include "proto.h"

#include "realm.h"
#include "step.h"

/* ESR_ELx fields (DDI0487 D24.2.40) for describing a fault. */
#define EC_DATA_ABORT_LOWER 0x24
#define EC_DATA_ABORT_SAME 0x25
#define EC_GPC 0x1e

const char *fault_description(const struct fault *f)
{
	unsigned dfsc = (unsigned)(f->esr & 0x3f);
	if (f->gpf)
		return "granule protection fault";
	if (f->ec != EC_DATA_ABORT_SAME && f->ec != EC_DATA_ABORT_LOWER)
		return f->ec == EC_GPC ? "GPC exception" : "exception";
	if (dfsc == 0x10)
		return "synchronous external abort";
	if (dfsc >= 0x14 && dfsc <= 0x17)
		return "synchronous external abort on table walk";
	if (dfsc <= 0x03)
		return "address size fault";
	if (dfsc <= 0x07)
		return "translation fault";
	if (dfsc >= 0x09 && dfsc <= 0x0b)
		return "access flag fault";
	if (dfsc >= 0x0d && dfsc <= 0x0f)
		return "permission fault";
	if (dfsc == 0x21)
		return "alignment fault";
	if (dfsc >= 0x22 && dfsc <= 0x28)
		return "granule protection fault";
	return "data abort";
}

void w_fault(struct wbuf *w, const struct fault *f)
{
	w_u8(w, f->ec & 0x3f);
	w_uvarint(w, f->esr);
	w_uvarint(w, f->far);
	w_u8(w, f->gpf ? 1 : 0);
	w_str(w, f->description ? f->description : fault_description(f), MAX_DESCRIPTION);
}

void agent_init(struct agent *a)
{
	a->in_session = false;
	a->session = 0;
	a->limit = AGENT_MAX_FRAME;
	a->next = 0;
	for (unsigned i = 0; i < REPLAY_DEPTH; i++)
		a->cache[i].used = false;
	rx_init(&a->rx, AGENT_MAX_FRAME);
}

/* A reply frame into buffer `wire`: type, seq and the payload in a->payload. */
static size_t reply(struct agent *a, uint8_t *wire, uint8_t type, uint16_t seq, size_t n)
{
	return frame_encode(type, seq, a->payload, n, wire);
}

static size_t error_payload(struct agent *a, uint8_t code, const char *msg)
{
	struct wbuf w;
	w_init(&w, a->payload, sizeof(a->payload));
	w_u8(&w, code);
	w_str(&w, msg, MAX_DESCRIPTION);
	return w.len;
}

static const char *const msg_names[] = {
	"", "HELLO", "INFO", "SMC", "READ", "WRITE", "FILL", "ACCESS", "REALM_RUN", "BATCH",
};

/* Execute a request other than HELLO; the answer's type and payload length (payload in a->payload). */
static uint8_t execute(struct agent *a, uint8_t type, const uint8_t *p, size_t n, size_t *len)
{
	struct wbuf w;
	struct text t;
	char msg[MAX_DESCRIPTION + 1];
	t_init(&t, msg, sizeof(msg));
	/* The reply payload must leave room for the header and CRC inside L. */
	w_init(&w, a->payload, a->limit - FRAME_MIN_BODY);

	if (type <= MSG_HELLO || type > MSG_BATCH) {
		t_str(&t, "unknown request type ");
		t_hex(&t, type);
		*len = error_payload(a, ERR_UNSUPPORTED, msg);
		return MSG_ERROR;
	}
	uint64_t needed = 0;
	switch (type) {
	case MSG_SMC:
		needed = CAP_SMC;
		break;
	case MSG_READ:
	case MSG_WRITE:
	case MSG_FILL:
		needed = CAP_MEMORY;
		break;
	case MSG_ACCESS:
		needed = CAP_ACCESS;
		break;
	case MSG_BATCH:
		needed = CAP_BATCH;
		break;
	case MSG_REALM_RUN:
		needed = CAP_REALM;
		break;
	default:
		break;
	}
	if (needed && !(port_caps() & needed)) {
		t_str(&t, msg_names[type]);
		t_str(&t, " is not supported by this agent");
		*len = error_payload(a, ERR_UNSUPPORTED, msg);
		return MSG_ERROR;
	}

	uint8_t answer = (uint8_t)(type | MSG_RESPONSE);
	if (type == MSG_INFO) {
		port_info(&w);
	} else if (type == MSG_BATCH) {
		if (!batch_run(p, n, a->limit, &w)) {
			*len = error_payload(a, ERR_MALFORMED, "malformed BATCH payload");
			return MSG_ERROR;
		}
	} else if (type == MSG_REALM_RUN) {
		int code = realm_run(p, n, &w, msg, sizeof(msg));
		if (code) {
			*len = error_payload(a, (uint8_t)code, msg);
			return MSG_ERROR;
		}
	} else {
		struct rbuf r;
		struct delta d;
		struct step s;
		struct fault fault;
		r_init(&r, p, n);
		mem_zero(&d, sizeof(d));
		if (!step_decode(&r, &d, (enum step_op)(type - MSG_SMC + 1), 0, false, &s) || r_remaining(&r)) {
			t_str(&t, "malformed ");
			t_str(&t, msg_names[type]);
			t_str(&t, " payload");
			*len = error_payload(a, ERR_MALFORMED, msg);
			return MSG_ERROR;
		}
		if (step_refused(&s, a->limit, msg, sizeof(msg))) {
			*len = error_payload(a, ERR_BAD_ARGUMENT, msg);
			return MSG_ERROR;
		}
		if (!step_run(&s, &w, &fault)) {
			w_init(&w, a->payload, sizeof(a->payload));
			w_fault(&w, &fault);
			*len = w.len;
			return MSG_FAULT;
		}
	}
	if (w.over) {
		*len = error_payload(a, ERR_TOO_LARGE, "the answer does not fit the frame limit");
		return MSG_ERROR;
	}
	*len = w.len;
	return answer;
}

static void hello(struct agent *a, uint16_t seq, const uint8_t *p, size_t n, const uint8_t **out, size_t *len)
{
	struct rbuf r;
	struct wbuf w;
	r_init(&r, p, n);
	uint8_t major = r_u8(&r);
	(void)r_u8(&r);
	uint64_t max_frame = r_uvarint(&r);
	if (r.bad) {
		size_t m = error_payload(a, ERR_MALFORMED, "malformed HELLO payload");
		*len = reply(a, a->wire, MSG_ERROR, seq, m);
		*out = a->wire;
		return;
	}
	if (major == PROTOCOL_MAJOR) {
		/* HELLO always runs: it is idempotent and starts a fresh session and replay cache. */
		a->session++;
		a->in_session = true;
		for (unsigned i = 0; i < REPLAY_DEPTH; i++)
			a->cache[i].used = false;
		uint64_t limit = max_frame < FRAME_BASE_MAX ? FRAME_BASE_MAX : max_frame;
		a->limit = limit < AGENT_MAX_FRAME ? (size_t)limit : AGENT_MAX_FRAME;
	}
	w_init(&w, a->payload, sizeof(a->payload));
	w_u8(&w, PROTOCOL_MAJOR);
	w_u8(&w, PROTOCOL_MINOR);
	w_uvarint(&w, AGENT_MAX_FRAME);
	w_u8(&w, REPLAY_DEPTH);
	w_uvarint(&w, port_caps());
	w_uvarint(&w, port_boot_id());
	w_str(&w, port_agent_name(), 200);
	size_t total = reply(a, a->wire, MSG_HELLO | MSG_RESPONSE, seq, w.len);
	if (a->in_session) {
		char msg[40];
		struct text t;
		t_init(&t, msg, sizeof(msg));
		t_str(&t, "session ");
		t_dec(&t, a->session);
		t_str(&t, " opened");
		w_init(&w, a->payload, sizeof(a->payload));
		w_u8(&w, 3); /* info */
		w_str(&w, msg, MAX_DESCRIPTION);
		total += reply(a, a->wire + total, MSG_LOG, (uint16_t)a->session, w.len);
	}
	*out = a->wire;
	*len = total;
}

void agent_event(struct agent *a, enum rx_event ev, const uint8_t **out, size_t *len)
{
	*out = a->wire;
	*len = 0;
	if (ev == RX_GARBAGE) {
		*len = frame_encode(MSG_NAK, 0, a->payload, 0, a->wire);
		return;
	}
	if (ev != RX_FRAME)
		return;
	const uint8_t *body = a->rx.body;
	size_t n = a->rx.body_len - FRAME_MIN_BODY;
	uint8_t type = body[0];
	uint16_t seq = (uint16_t)(body[1] | (body[2] << 8));
	const uint8_t *c = body + a->rx.body_len - FRAME_CRC;
	uint32_t crc = (uint32_t)c[0] | ((uint32_t)c[1] << 8) | ((uint32_t)c[2] << 16) | ((uint32_t)c[3] << 24);

	if (type & MSG_RESPONSE)
		return;
	if (type == MSG_HELLO) {
		hello(a, seq, body + FRAME_HEADER, n, out, len);
		return;
	}
	if (!a->in_session) {
		size_t m = error_payload(a, ERR_NO_SESSION, "no HELLO since boot");
		*len = reply(a, a->wire, MSG_ERROR, seq, m);
		return;
	}
	for (unsigned i = 0; i < REPLAY_DEPTH; i++) {
		struct cached *k = &a->cache[i];
		if (k->used && k->seq == seq && k->crc == crc) {
			*out = k->wire;
			*len = k->len;
			return;
		}
	}
	port_executing(a->session, seq);
	size_t m = 0;
	uint8_t answer = execute(a, type, body + FRAME_HEADER, n, &m);
	struct cached *slot = &a->cache[a->next];
	a->next = (a->next + 1) % REPLAY_DEPTH;
	slot->used = true;
	slot->seq = seq;
	slot->crc = crc;
	slot->len = reply(a, slot->wire, answer, seq, m);
	*out = slot->wire;
	*len = slot->len;
}
