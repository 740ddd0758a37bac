/* Framing (docs/agent-protocol.md §3): SOF COBS(body) EOF, CRC-32C, and the receiver. */
#ifndef AGENT_FRAME_H
#define AGENT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_SOF 0x1e
#define FRAME_EOF 0x00
#define FRAME_HEADER 3
#define FRAME_CRC 4
#define FRAME_MIN_BODY (FRAME_HEADER + FRAME_CRC)
#define FRAME_BASE_MAX 256

/* Largest body this agent accepts and sends (announced in HELLO_REPLY): 4 KiB of data plus room. */
#define AGENT_MAX_FRAME (4096 + 64)
/* Wire bytes of a frame with a body of n bytes: SOF, COBS overhead, EOF. */
#define FRAME_WIRE_MAX(n) ((n) + (n) / 254 + 3)

uint32_t crc32c(uint32_t crc, const uint8_t *data, size_t n);

/* COBS-encode n bytes into out (room: FRAME_WIRE_MAX(n) - 2); returns the encoded length. */
size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out);
/* Decode; returns the decoded length, or -1 if the input is not valid COBS or exceeds cap. */
long cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Build a whole frame on the wire: SOF COBS(type seq payload crc) EOF; returns its length. */
size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *wire);

enum rx_event { RX_NONE, RX_FRAME, RX_GARBAGE };

/* The receiver of §3.2 without RESYNC and OVERFLOW restarts (which §3.2 allows; §8 recovers). */
struct rx {
	bool in_frame;
	size_t len;
	size_t body_len;
	size_t limit; /* largest body accepted */
	uint8_t buf[FRAME_WIRE_MAX(AGENT_MAX_FRAME)];
	uint8_t body[AGENT_MAX_FRAME];
};

void rx_init(struct rx *rx, size_t limit);
/* Feed one byte; RX_FRAME leaves a checked body (header, payload, CRC) in rx->body/body_len. */
enum rx_event rx_feed(struct rx *rx, uint8_t byte);
/* Silence for the gap time: a partly received frame becomes garbage. */
enum rx_event rx_silence(struct rx *rx);

#endif
