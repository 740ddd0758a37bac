/* Framing (docs/agent-protocol.md §3). */
#include "frame.h"

#include "wire.h"

/* CRC-32C, reflected polynomial 0x82F63B78, four bits at a time (a 64-byte table). */
static const uint32_t crc_nibble[16] = {
	0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
	0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9, 0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

uint32_t crc32c(uint32_t crc, const uint8_t *data, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *data++;
		crc = (crc >> 4) ^ crc_nibble[crc & 15];
		crc = (crc >> 4) ^ crc_nibble[crc & 15];
	}
	return ~crc;
}

size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
	size_t o = 0, code_at = o++;
	uint8_t code = 1;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == 0) {
			out[code_at] = code;
			code_at = o++;
			code = 1;
			continue;
		}
		out[o++] = in[i];
		if (++code == 0xff) {
			/* A full block implies no zero after it; a (possibly empty) block must still follow. */
			out[code_at] = code;
			code_at = o++;
			code = 1;
		}
	}
	out[code_at] = code;
	return o;
}

long cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0;
	while (i < n) {
		uint8_t code = in[i];
		if (code == 0 || i + code > n)
			return -1;
		for (size_t k = i + 1; k < i + code; k++) {
			if (in[k] == 0 || o >= cap)
				return -1;
			out[o++] = in[k];
		}
		i += code;
		if (code < 0xff && i < n) {
			if (o >= cap)
				return -1;
			out[o++] = 0;
		}
	}
	return (long)o;
}

size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *wire)
{
	/* The body is staged at the end of the wire buffer, so COBS writes ahead of what it reads. */
	size_t body_len = n + FRAME_MIN_BODY;
	uint8_t *body = wire + FRAME_WIRE_MAX(body_len) - body_len;
	body[0] = type;
	body[1] = (uint8_t)seq;
	body[2] = (uint8_t)(seq >> 8);
	for (size_t i = n; i > 0; i--) /* payload may already sit inside `body` */
		body[FRAME_HEADER + i - 1] = payload[i - 1];
	uint32_t crc = crc32c(0, body, n + FRAME_HEADER);
	for (unsigned i = 0; i < 4; i++)
		body[n + FRAME_HEADER + i] = (uint8_t)(crc >> (8 * i));
	wire[0] = FRAME_SOF;
	size_t len = cobs_encode(body, body_len, wire + 1);
	wire[1 + len] = FRAME_EOF;
	return len + 2;
}

void rx_init(struct rx *rx, size_t limit)
{
	rx->in_frame = false;
	rx->len = 0;
	rx->body_len = 0;
	rx->limit = limit;
}

static enum rx_event rx_close(struct rx *rx)
{
	rx->in_frame = false;
	long n = cobs_decode(rx->buf, rx->len, rx->body, rx->limit);
	rx->len = 0;
	if (n < FRAME_MIN_BODY)
		return RX_GARBAGE;
	size_t body_len = (size_t)n;
	const uint8_t *c = rx->body + body_len - FRAME_CRC;
	uint32_t crc = (uint32_t)c[0] | ((uint32_t)c[1] << 8) | ((uint32_t)c[2] << 16) | ((uint32_t)c[3] << 24);
	if (crc32c(0, rx->body, body_len - FRAME_CRC) != crc)
		return RX_GARBAGE;
	rx->body_len = body_len;
	return RX_FRAME;
}

enum rx_event rx_feed(struct rx *rx, uint8_t byte)
{
	if (!rx->in_frame) {
		if (byte == FRAME_SOF) {
			rx->in_frame = true;
			rx->len = 0;
			return RX_NONE;
		}
		/* EOF outside a frame is what a frame whose SOF was lost leaves; other bytes are text. */
		return byte == FRAME_EOF ? RX_GARBAGE : RX_NONE;
	}
	if (byte == FRAME_EOF)
		return rx_close(rx);
	if (rx->len >= FRAME_WIRE_MAX(rx->limit) - 2) {
		rx->in_frame = false;
		rx->len = 0;
		return RX_GARBAGE;
	}
	rx->buf[rx->len++] = byte;
	return RX_NONE;
}

enum rx_event rx_silence(struct rx *rx)
{
	if (!rx->in_frame)
		return RX_NONE;
	rx->in_frame = false;
	rx->len = 0;
	return RX_GARBAGE;
}
