/* Field encodings of the agent link (docs/agent-protocol.md §5): bounded writers and readers. */
#ifndef AGENT_WIRE_H
#define AGENT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A writer into a fixed buffer; writing past `cap` sets `over` and drops the bytes. */
struct wbuf {
	uint8_t *p;
	size_t len;
	size_t cap;
	bool over;
};

/* A reader over a payload; reading past the end or a malformed varint sets `bad` (sticky). */
struct rbuf {
	const uint8_t *p;
	size_t len;
	size_t pos;
	bool bad;
};

void w_init(struct wbuf *w, uint8_t *p, size_t cap);
void w_u8(struct wbuf *w, uint8_t v);
void w_u16(struct wbuf *w, uint16_t v);
void w_u32(struct wbuf *w, uint32_t v);
void w_uvarint(struct wbuf *w, uint64_t v);
void w_reg(struct wbuf *w, uint64_t v);
void w_bytes(struct wbuf *w, const void *src, size_t n);
/* A `str` field from a NUL-terminated string, cut to `max` bytes. */
void w_str(struct wbuf *w, const char *s, size_t max);
/* Room for `n` bytes written by the caller; NULL (and `over`) if they do not fit. */
uint8_t *w_reserve(struct wbuf *w, size_t n);
/* `regs(n)`: count byte and registers with trailing zeros dropped. */
void w_regs(struct wbuf *w, const uint64_t *regs, unsigned n);
size_t uvarint_size(uint64_t v);

void r_init(struct rbuf *r, const uint8_t *p, size_t len);
uint8_t r_u8(struct rbuf *r);
uint16_t r_u16(struct rbuf *r);
uint32_t r_u32(struct rbuf *r);
uint64_t r_uvarint(struct rbuf *r);
uint64_t r_reg(struct rbuf *r);
/* Pointer to `n` payload bytes, or NULL (and `bad`) if fewer remain. */
const uint8_t *r_take(struct rbuf *r, uint64_t n);
size_t r_remaining(const struct rbuf *r);

uint64_t zigzag(uint64_t v);
uint64_t unzigzag(uint64_t v);

/* Tiny formatting for messages: append text, decimal and hex numbers into a char buffer. */
struct text {
	char *p;
	size_t len;
	size_t cap;
};
void t_init(struct text *t, char *p, size_t cap);
void t_str(struct text *t, const char *s);
void t_dec(struct text *t, uint64_t v);
void t_hex(struct text *t, uint64_t v);

void mem_copy(void *dst, const void *src, size_t n);
void mem_zero(void *dst, size_t n);

#endif
