/* tests/support/slow_resolver.c — LD_PRELOADed into nearcached by the Redis
 * tier's end-to-end tests to make a host name resolve slowly, as a slow or
 * unreachable DNS server would: getaddrinfo() of a name ending in
 * ".slow.nearcache.test" sleeps $NEARCACHE_SLOW_RESOLVE_MS milliseconds, then
 * resolves 127.0.0.1. Every other name is resolved by libc as usual. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*getaddrinfo_fn)(const char*, const char*, const struct addrinfo*, struct addrinfo**);

int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints, struct addrinfo** res) {
  static getaddrinfo_fn real;
  if (!real) real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
  static const char suffix[] = ".slow.nearcache.test";
  const size_t n = node ? strlen(node) : 0, s = sizeof suffix - 1;
  if (n > s && strcmp(node + n - s, suffix) == 0) {
    const char* ms = getenv("NEARCACHE_SLOW_RESOLVE_MS");
    const long d = ms ? atol(ms) : 3000;
    struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return real("127.0.0.1", service, hints, res);
  }
  return real(node, service, hints, res);
}
