/* The agent's side of the link (docs/agent-protocol.md §6, §8, §11): session, replay cache, dispatch. */
#ifndef AGENT_PROTO_H
#define AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "port.h"
#include "wire.h"

#define PROTOCOL_MAJOR 1
#define PROTOCOL_MINOR 0
#define REPLAY_DEPTH 4

enum msg_type {
	MSG_HELLO = 0x01,
	MSG_INFO = 0x02,
	MSG_SMC = 0x03,
	MSG_READ = 0x04,
	MSG_WRITE = 0x05,
	MSG_FILL = 0x06,
	MSG_ACCESS = 0x07,
	MSG_REALM_RUN = 0x08,
	MSG_BATCH = 0x09,
	MSG_RESPONSE = 0x80,
	MSG_LOG = 0xc0,
	MSG_NAK = 0xfd,
	MSG_FAULT = 0xfe,
	MSG_ERROR = 0xff,
};

enum error_code {
	ERR_UNSUPPORTED = 1,
	ERR_MALFORMED = 2,
	ERR_TOO_LARGE = 3,
	ERR_NO_SESSION = 4,
	ERR_BAD_ARGUMENT = 5,
	ERR_INTERNAL = 7,
};

enum agent_caps {
	CAP_SMC = 1u << 0,
	CAP_MEMORY = 1u << 1,
	CAP_ACCESS = 1u << 2,
	CAP_REALM = 1u << 3,
	CAP_BATCH = 1u << 4,
	CAP_LOG = 1u << 5,
	CAP_ATTESTATION = 1u << 6,
};

#define MAX_DESCRIPTION 64
#define WIRE_MAX FRAME_WIRE_MAX(AGENT_MAX_FRAME)

struct cached {
	bool used;
	uint16_t seq;
	uint32_t crc;
	size_t len;
	uint8_t wire[WIRE_MAX];
};

struct agent {
	bool in_session;
	uint32_t session;
	size_t limit; /* L: negotiated largest body */
	unsigned next; /* cache slot to fill next (oldest) */
	struct cached cache[REPLAY_DEPTH];
	uint8_t payload[AGENT_MAX_FRAME];
	uint8_t wire[WIRE_MAX + FRAME_WIRE_MAX(FRAME_BASE_MAX)];
	struct rx rx;
};

void agent_init(struct agent *a);
/*
 * Answer one event of the receiver (RX_FRAME: the body in a->rx; RX_GARBAGE: a NAK).
 * Returns the bytes to send (possibly none) in *out and *len; they stay valid until the next call.
 */
void agent_event(struct agent *a, enum rx_event ev, const uint8_t **out, size_t *len);

/* Encode a fault record (§5) with a description decoded from the ESR. */
void w_fault(struct wbuf *w, const struct fault *f);
/* What a fault was, in words ("granule protection fault", "synchronous external abort"…). */
const char *fault_description(const struct fault *f);

#endif
