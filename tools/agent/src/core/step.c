/* Steps alone and in BATCH (docs/agent-protocol.md §7). */
#include "step.h"

#include "frame.h"
#include "proto.h"

static void remember(struct delta *d, uint32_t fid, uint8_t nargs, uint8_t nres)
{
	for (unsigned i = SHAPES - 1; i > 0; i--) {
		d->fid[i] = d->fid[i - 1];
		d->nargs[i] = d->nargs[i - 1];
		d->nres[i] = d->nres[i - 1];
	}
	d->fid[0] = fid;
	d->nargs[0] = nargs;
	d->nres[0] = nres;
	if (d->nshapes < SHAPES)
		d->nshapes++;
}

static uint64_t read_pa(struct rbuf *r, struct delta *d)
{
	d->pa += r_reg(r);
	return d->pa;
}

bool step_decode(struct rbuf *r, struct delta *d, enum step_op op, uint8_t flags, bool batched,
		 struct step *s)
{
	s->op = op;
	switch (op) {
	case OP_SMC:
		if (flags & SHAPE_REF) {
			unsigned index = (flags >> 5) & (SHAPES - 1);
			if (index >= d->nshapes)
				return false;
			s->fid = d->fid[index];
			s->nargs = d->nargs[index];
			s->nres = d->nres[index];
		} else {
			s->fid = r_u32(r);
			s->nargs = r_u8(r);
			s->nres = r_u8(r);
			if (r->bad || s->nargs > MAX_ARGS || s->nres < 1 || s->nres > MAX_ARGS + 1)
				return false;
			remember(d, s->fid, s->nargs, s->nres);
		}
		for (unsigned i = 0; i < MAX_ARGS; i++) {
			s->args[i] = i < s->nargs ? d->args[i] + r_reg(r) : 0;
			d->args[i] = s->args[i];
		}
		break;
	case OP_READ:
		s->pa = read_pa(r, d);
		s->size = r_uvarint(r);
		break;
	case OP_WRITE:
		s->pa = read_pa(r, d);
		s->size = batched ? r_uvarint(r) : r_remaining(r);
		s->data = r_take(r, s->size);
		break;
	case OP_FILL:
		s->pa = read_pa(r, d);
		s->size = r_uvarint(r);
		s->plen = r_u8(r);
		if (s->plen < 1 || s->plen > 8)
			return false;
		{
			const uint8_t *p = r_take(r, s->plen);
			if (p)
				mem_copy(s->pattern, p, s->plen);
		}
		break;
	case OP_ACCESS: {
		uint8_t mode = r_u8(r);
		if (mode & ~0x83u)
			return false;
		s->store = (mode & 0x80) != 0;
		s->size_log2 = mode & 3u;
		s->pa = read_pa(r, d);
		s->value = s->store ? r_uvarint(r) : 0;
		if (s->size_log2 < 3 && (s->value >> (8u << s->size_log2)))
			return false;
		break;
	}
	default:
		return false;
	}
	return !r->bad;
}

bool step_refused(const struct step *s, size_t limit, char *msg, size_t cap)
{
	struct text t;
	t_init(&t, msg, cap);
	if (s->op == OP_READ && s->size + FRAME_MIN_BODY > limit) {
		t_str(&t, "read of ");
		t_dec(&t, s->size);
		t_str(&t, " bytes does not fit a ");
		t_dec(&t, limit);
		t_str(&t, "-byte frame");
		return true;
	}
	if (s->op == OP_FILL && s->size > MAX_FILL) {
		t_str(&t, "fill of ");
		t_dec(&t, s->size);
		t_str(&t, " bytes exceeds ");
		t_dec(&t, MAX_FILL);
		return true;
	}
	return false;
}

uint64_t step_bound(const struct step *s)
{
	switch (s->op) {
	case OP_SMC:
		return 1 + 10u * s->nres;
	case OP_READ:
		return s->size;
	case OP_ACCESS:
		return 1 + FAULT_BOUND;
	default:
		return 0;
	}
}

bool step_run(const struct step *s, struct wbuf *w, struct fault *fault)
{
	switch (s->op) {
	case OP_SMC: {
		uint64_t regs[SMC_REGS];
		regs[0] = s->fid;
		for (unsigned i = 0; i < MAX_ARGS; i++)
			regs[i + 1] = s->args[i];
		port_smc(regs);
		w_regs(w, regs, s->nres);
		return true;
	}
	case OP_READ: {
		uint8_t *dst = w_reserve(w, (size_t)s->size);
		if (!dst)
			return true; /* the caller sees w->over: TOO_LARGE */
		return port_read(s->pa, dst, (size_t)s->size, fault);
	}
	case OP_WRITE:
		return port_write(s->pa, s->data, (size_t)s->size, fault);
	case OP_FILL:
		return port_fill(s->pa, s->size, s->pattern, s->plen, fault);
	case OP_ACCESS: {
		uint64_t value = s->value;
		struct fault f;
		if (port_access(s->pa, s->store, s->size_log2, &value, &f)) {
			w_u8(w, 0);
			w_uvarint(w, s->store ? 0 : value);
		} else {
			w_u8(w, 1);
			w_fault(w, &f);
		}
		return true;
	}
	}
	return true;
}

static bool batch_step(struct rbuf *r, struct delta *d, struct step *s)
{
	uint8_t head = r_u8(r);
	unsigned op = head & 0x0f;
	uint8_t flags = head & 0xf0;
	if (r->bad || op < OP_SMC || op > OP_ACCESS)
		return false;
	if ((flags & 0x80) || (flags && op != OP_SMC) || (flags && !(flags & SHAPE_REF)))
		return false;
	return step_decode(r, d, (enum step_op)op, flags, true, s);
}

enum batch_stop { STOP_COMPLETE = 0, STOP_FAULT = 1, STOP_ERROR = 2, STOP_FULL = 3 };

bool batch_run(const uint8_t *payload, size_t n, size_t limit, struct wbuf *reply)
{
	struct rbuf r;
	struct delta d;
	struct step s;

	/* First pass: the whole batch must parse, or nothing runs. */
	r_init(&r, payload, n);
	mem_zero(&d, sizeof(d));
	uint64_t count = r_uvarint(&r);
	if (r.bad || count > n)
		return false;
	for (uint64_t i = 0; i < count; i++)
		if (!batch_step(&r, &d, &s))
			return false;
	if (r_remaining(&r))
		return false;

	/* Second pass: run. Results go after a count we only know at the end, so leave its room. */
	r_init(&r, payload, n);
	mem_zero(&d, sizeof(d));
	(void)r_uvarint(&r);
	uint8_t results[AGENT_MAX_FRAME];
	struct wbuf w;
	w_init(&w, results, sizeof(results));
	uint64_t room = limit - FRAME_MIN_BODY - 10 - 1 - FAULT_BOUND;
	uint64_t executed = 0;
	enum batch_stop stop = STOP_COMPLETE;
	struct fault fault;
	char msg[MAX_DESCRIPTION + 1];
	for (; executed < count; executed++) {
		(void)batch_step(&r, &d, &s);
		if (w.len + step_bound(&s) > room) {
			stop = STOP_FULL;
			break;
		}
		if (step_refused(&s, limit, msg, sizeof(msg))) {
			stop = STOP_ERROR;
			break;
		}
		size_t mark = w.len;
		if (!step_run(&s, &w, &fault)) {
			w.len = mark; /* a faulted read leaves no result */
			stop = STOP_FAULT;
			break;
		}
	}
	w_uvarint(reply, executed);
	w_bytes(reply, results, w.len);
	w_u8(reply, (uint8_t)stop);
	if (stop == STOP_FAULT) {
		w_fault(reply, &fault);
	} else if (stop == STOP_ERROR) {
		w_u8(reply, ERR_BAD_ARGUMENT);
		w_str(reply, msg, MAX_DESCRIPTION);
	}
	return true;
}
