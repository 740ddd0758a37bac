/* Steps (SMC, READ, WRITE, FILL, ACCESS) alone and in BATCH (docs/agent-protocol.md §7). */
#ifndef AGENT_STEP_H
#define AGENT_STEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port.h"
#include "wire.h"

enum step_op { OP_SMC = 1, OP_READ = 2, OP_WRITE = 3, OP_FILL = 4, OP_ACCESS = 5 };

#define MAX_ARGS 17
#define SHAPES 4
#define SHAPE_REF 0x10
#define MAX_FILL (64ull << 20)
#define FAULT_BOUND (1 + 10 + 10 + 1 + 1 + 64)

/* What batch encoding refers back to; a lone request starts from a zeroed state. */
struct delta {
	unsigned nshapes;
	uint32_t fid[SHAPES];
	uint8_t nargs[SHAPES];
	uint8_t nres[SHAPES];
	uint64_t args[MAX_ARGS];
	uint64_t pa;
};

struct step {
	enum step_op op;
	uint32_t fid;
	uint8_t nargs;
	uint8_t nres;
	uint64_t args[MAX_ARGS];
	uint64_t pa;
	uint64_t size;
	const uint8_t *data;
	uint8_t pattern[8];
	uint8_t plen;
	bool store;
	unsigned size_log2;
	uint64_t value;
};

/* Parse one step body; false if malformed. `batched`: a WRITE carries its length. */
bool step_decode(struct rbuf *r, struct delta *d, enum step_op op, uint8_t flags, bool batched,
		 struct step *s);
/* Why a well-formed step cannot run (BAD_ARGUMENT), written into msg; false if it can. */
bool step_refused(const struct step *s, size_t limit, char *msg, size_t cap);
/* Run a step; its result is appended to w. false: a READ/WRITE/FILL faulted (*fault filled). */
bool step_run(const struct step *s, struct wbuf *w, struct fault *fault);
/* Largest encoded result (keeps a batch reply inside the frame limit). */
uint64_t step_bound(const struct step *s);

/* BATCH: the whole payload is checked first (malformed: nothing runs); returns false if malformed. */
bool batch_run(const uint8_t *payload, size_t n, size_t limit, struct wbuf *reply);

#endif
