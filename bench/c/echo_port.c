/* Baseline for bench/port.ts: the smallest possible echo port with the same framing
 * ({packet,4} on fds 3/4) and the same reply shape: {req, Id, Op, Args} in,
 * {reply, Id, {ok, Args}} out, built by splicing bytes (no term decoding at all). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_full(int fd, unsigned char *buf, size_t n) {
  size_t got = 0;
  while (got < n) { ssize_t r = read(fd, buf + got, n - got); if (r <= 0) return -1; got += (size_t)r; }
  return 0;
}
static int write_full(int fd, const unsigned char *buf, size_t n) {
  size_t put = 0;
  while (put < n) { ssize_t r = write(fd, buf + put, n - put); if (r <= 0) return -1; put += (size_t)r; }
  return 0;
}
/* length of the atom or integer term at p */
static size_t term_len(const unsigned char *p) {
  switch (p[0]) {
    case 97: return 2;
    case 98: return 5;
    case 110: return 3 + p[1];
    case 100: case 118: return 3 + ((size_t)p[1] << 8 | p[2]);
    case 115: case 119: return 2 + p[1];
    default: return 0;
  }
}
int main(void) {
  int in = 3, out = 4;
  unsigned char hdr[4];
  unsigned char *buf = NULL, *rep = NULL; size_t cap = 0;
  for (;;) {
    if (read_full(in, hdr, 4)) return 0;
    size_t n = (size_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3];
    if (n + 64 > cap) { cap = (n + 64) * 2; buf = realloc(buf, cap); rep = realloc(rep, cap); }
    if (read_full(in, buf, n)) return 0;
    /* 131, 104, 4, req-atom, id, op-atom, args */
    size_t p = 3; p += term_len(buf + p);
    size_t id_at = p, id_len = term_len(buf + p); p += id_len;
    p += term_len(buf + p);
    size_t args_at = p, args_len = n - p;
    static const unsigned char reply_atom[] = {119, 5, 'r', 'e', 'p', 'l', 'y'};
    static const unsigned char ok_tuple[] = {104, 2, 119, 2, 'o', 'k'};
    size_t m = 0;
    rep[4 + m++] = 131; rep[4 + m++] = 104; rep[4 + m++] = 3;
    memcpy(rep + 4 + m, reply_atom, sizeof reply_atom); m += sizeof reply_atom;
    memcpy(rep + 4 + m, buf + id_at, id_len); m += id_len;
    memcpy(rep + 4 + m, ok_tuple, sizeof ok_tuple); m += sizeof ok_tuple;
    memcpy(rep + 4 + m, buf + args_at, args_len); m += args_len;
    rep[0] = m >> 24; rep[1] = m >> 16; rep[2] = m >> 8; rep[3] = m;
    if (write_full(out, rep, m + 4)) return 0;
  }
}
