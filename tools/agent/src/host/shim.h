/*
 * The host build's link to the model: a request/response protocol over a socket to the shim
 * process (cca_hil/tools/agent_shim.py), which executes SMCs, memory accesses and realm entries
 * on the Python model. Request: op u8, length u32le, body; answer: length u32le, body.
 */
#ifndef AGENT_HOST_SHIM_H
#define AGENT_HOST_SHIM_H

#include <stddef.h>
#include <stdint.h>

enum shim_op {
	SHIM_PLATFORM = 1, /* -> caps u64, boot_id u64, INFO_REPLY payload */
	SHIM_SMC = 2,	   /* X0..X17 u64 -> X0..X17 u64 */
	SHIM_READ = 3,	   /* pa u64, size u32 -> status u8, data | fault */
	SHIM_WRITE = 4,	   /* pa u64, data -> status u8 [fault] */
	SHIM_FILL = 5,	   /* pa u64, size u64, plen u8, pattern -> status u8 [fault] */
	SHIM_ACCESS = 6,   /* pa u64, store u8, size_log2 u8, value u64 -> status u8, value u64 | fault */
	SHIM_REALM = 7,	   /* rec u64, run u64, shared page -> X0..X4 u64, shared page */
	SHIM_EXECUTING = 8, /* session u32, seq u16 -> empty */
};

/* Connect to the shim on an inherited socket. */
void shim_init(int fd);
/* One exchange; returns the answer's length (the answer is in `answer`, up to `cap` bytes). */
size_t shim_call(uint8_t op, const uint8_t *body, size_t n, uint8_t *answer, size_t cap);

#endif
