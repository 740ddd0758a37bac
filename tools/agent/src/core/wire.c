/* Field encodings of the agent link (docs/agent-protocol.md §5). */
#include "wire.h"

void w_init(struct wbuf *w, uint8_t *p, size_t cap)
{
	w->p = p;
	w->len = 0;
	w->cap = cap;
	w->over = false;
}

uint8_t *w_reserve(struct wbuf *w, size_t n)
{
	if (w->over || n > w->cap - w->len) {
		w->over = true;
		return NULL;
	}
	uint8_t *at = w->p + w->len;
	w->len += n;
	return at;
}

void w_u8(struct wbuf *w, uint8_t v)
{
	uint8_t *at = w_reserve(w, 1);
	if (at)
		*at = v;
}

void w_u16(struct wbuf *w, uint16_t v)
{
	w_u8(w, (uint8_t)v);
	w_u8(w, (uint8_t)(v >> 8));
}

void w_u32(struct wbuf *w, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		w_u8(w, (uint8_t)(v >> (8 * i)));
}

void w_uvarint(struct wbuf *w, uint64_t v)
{
	while (v >= 0x80) {
		w_u8(w, (uint8_t)((v & 0x7f) | 0x80));
		v >>= 7;
	}
	w_u8(w, (uint8_t)v);
}

size_t uvarint_size(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

uint64_t zigzag(uint64_t v)
{
	/* (s << 1) ^ (s >> 63) with s the value read as signed: an arithmetic shift of the sign. */
	uint64_t sign = (v >> 63) ? ~(uint64_t)0 : 0;
	return (v << 1) ^ sign;
}

uint64_t unzigzag(uint64_t v)
{
	return (v >> 1) ^ (~(v & 1) + 1);
}

void w_reg(struct wbuf *w, uint64_t v)
{
	w_uvarint(w, zigzag(v));
}

void w_bytes(struct wbuf *w, const void *src, size_t n)
{
	uint8_t *at = w_reserve(w, n);
	if (at)
		mem_copy(at, src, n);
}

void w_str(struct wbuf *w, const char *s, size_t max)
{
	size_t n = 0;
	while (s[n] && n < max)
		n++;
	w_uvarint(w, n);
	w_bytes(w, s, n);
}

void w_regs(struct wbuf *w, const uint64_t *regs, unsigned n)
{
	while (n && regs[n - 1] == 0)
		n--;
	w_u8(w, (uint8_t)n);
	for (unsigned i = 0; i < n; i++)
		w_reg(w, regs[i]);
}

void r_init(struct rbuf *r, const uint8_t *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->pos = 0;
	r->bad = false;
}

size_t r_remaining(const struct rbuf *r)
{
	return r->len - r->pos;
}

const uint8_t *r_take(struct rbuf *r, uint64_t n)
{
	if (r->bad || n > r_remaining(r)) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *at = r->p + r->pos;
	r->pos += (size_t)n;
	return at;
}

uint8_t r_u8(struct rbuf *r)
{
	const uint8_t *at = r_take(r, 1);
	return at ? *at : 0;
}

uint16_t r_u16(struct rbuf *r)
{
	const uint8_t *at = r_take(r, 2);
	return at ? (uint16_t)(at[0] | (at[1] << 8)) : 0;
}

uint32_t r_u32(struct rbuf *r)
{
	const uint8_t *at = r_take(r, 4);
	if (!at)
		return 0;
	return (uint32_t)at[0] | ((uint32_t)at[1] << 8) | ((uint32_t)at[2] << 16) | ((uint32_t)at[3] << 24);
}

uint64_t r_uvarint(struct rbuf *r)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 70; shift += 7) {
		uint8_t byte = r_u8(r);
		if (r->bad)
			return 0;
		if (shift == 63 && (byte & 0x7e)) {
			/* More than 64 bits (or more than 10 bytes): malformed. */
			r->bad = true;
			return 0;
		}
		v |= (uint64_t)(byte & 0x7f) << shift;
		if (!(byte & 0x80))
			return v;
	}
	r->bad = true;
	return 0;
}

uint64_t r_reg(struct rbuf *r)
{
	return unzigzag(r_uvarint(r));
}

void t_init(struct text *t, char *p, size_t cap)
{
	t->p = p;
	t->len = 0;
	t->cap = cap;
	if (cap)
		p[0] = 0;
}

static void t_char(struct text *t, char c)
{
	if (t->len + 1 < t->cap) {
		t->p[t->len++] = c;
		t->p[t->len] = 0;
	}
}

void t_str(struct text *t, const char *s)
{
	while (*s)
		t_char(t, *s++);
}

void t_dec(struct text *t, uint64_t v)
{
	char digits[20];
	unsigned n = 0;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		t_char(t, digits[--n]);
}

void t_hex(struct text *t, uint64_t v)
{
	static const char hex[] = "0123456789abcdef";
	char digits[16];
	unsigned n = 0;
	do {
		digits[n++] = hex[v & 15];
		v >>= 4;
	} while (v);
	t_str(t, "0x");
	while (n)
		t_char(t, digits[--n]);
}

void mem_copy(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	while (n--)
		*d++ = *s++;
}

void mem_zero(void *dst, size_t n)
{
	uint8_t *d = dst;
	while (n--)
		*d++ = 0;
}
