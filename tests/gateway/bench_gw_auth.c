/*  bench_gw_auth — what access checks and rate limiting cost the gateway
    per request, measured on the modules alone (no HTTP, no bus). Not a
    test: built with the tests, run by hand.

        build/tests/gateway/bench_gw_auth [iterations]

    Prints nanoseconds per request for: the token check answered from the
    verified-token cache (every request after a client's first), the full
    verification (HMAC and JSON parse, a token's first request), one GCRA
    count on a hot key and on 50 000 keys, packing the auth map, and the
    gateway's whole per-request path on an authenticated route (check +
    count + auth map). */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "mb_jwt.h"
#include "ratelimit.h"

#define S_SECRET "bench-secret-with-at-least-32-bytes-of-key"

static int64_t s_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static volatile int s_sink;

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    if (n < 1000)
        n = 1000;
    mb_jwt_policy_t policy = {.iss = "musicbus", .aud = "musicbus-api", .leeway_s = 30};
    mb_jwt_key_t *key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    int64_t now = (int64_t)time(NULL);
    mb_jwt_claims_t c = {.sub = "4tZwfgrHOc3mvqYlEYSvVi", .sid = "0vC2JxWt1hbPdNkZ8s3Xq7",
                         .tier = "premium", .roles = MB_ROLE_USER, .iat = now, .exp = now + 900};
    char *token = NULL;
    mb_jwt_sign(key, &policy, &c, &token);
    char header[1200];
    snprintf(header, sizeof header, "Bearer %s", token);
    gw_auth_t *cached = gw_auth_new(&key, &policy, 1024);
    key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    gw_auth_t *uncached = gw_auth_new(&key, &policy, 0);
    gw_rate_t *rate = gw_rate_new(GW_RATE_SLOTS);
    gw_rate_spec_t spec;
    gw_rate_spec_parse("1000000000/s burst 1000000", &spec, NULL, 0);
    int budget = gw_rate_budget(rate, "default", &spec);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    gw_rate_result_t rr;
    printf("bench_gw_auth: %ld iterations, token %zu bytes\n", n, strlen(token));

    int64_t t0 = s_ns();
    for (long i = 0; i < n; i++)
        s_sink += gw_auth_check(cached, GW_ACCESS_USER, header, now, &claims, &res);
    double hit = (double)(s_ns() - t0) / (double)n;
    printf("  token check, cache hit            %8.1f ns\n", hit);

    mb_jwt_cache_t *cache = mb_jwt_cache_new(1024);
    mb_jwt_key_t *k2 = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    const char *why;
    t0 = s_ns();
    for (long i = 0; i < n; i++)
        s_sink += mb_jwt_verify_cached(cache, k2, &policy, token, strlen(token), now, &claims, &why);
    printf("   of which mb_jwt_verify_cached    %8.1f ns\n", (double)(s_ns() - t0) / (double)n);
    const char *tok;
    size_t tok_len;
    t0 = s_ns();
    for (long i = 0; i < n; i++)
        s_sink += gw_auth_bearer(header, &tok, &tok_len);
    printf("   gw_auth_bearer (refusals only)   %8.1f ns\n", (double)(s_ns() - t0) / (double)n);
    mb_jwt_cache_destroy(&cache);
    mb_jwt_key_destroy(&k2);

    long m = n / 20;
    t0 = s_ns();
    for (long i = 0; i < m; i++)
        s_sink += gw_auth_check(uncached, GW_ACCESS_USER, header, now, &claims, &res);
    printf("  token check, full verify          %8.1f ns\n", (double)(s_ns() - t0) / (double)m);

    gw_rate_key_t hot = {"user", claims.sub, strlen(claims.sub)};
    int64_t clock = s_ns();
    t0 = s_ns();
    for (long i = 0; i < n; i++)
        gw_rate_take(rate, budget, &hot, 1, clock + i * 1000, &rr);
    double one = (double)(s_ns() - t0) / (double)n;
    printf("  GCRA count, one hot key           %8.1f ns\n", one);

    uint32_t id;
    gw_rate_key_t many = {"addr", &id, sizeof id};
    t0 = s_ns();
    for (long i = 0; i < n; i++) {
        id = (uint32_t)(i % 50000);
        gw_rate_take(rate, budget, &many, 1, clock + i * 1000, &rr);
    }
    printf("  GCRA count, 50000 keys            %8.1f ns\n", (double)(s_ns() - t0) / (double)n);

    t0 = s_ns();
    for (long i = 0; i < n; i++) {
        msgpack_sbuffer_clear(&sbuf);
        mb_jwt_pack_auth(&pk, &claims);
    }
    double pack = (double)(s_ns() - t0) / (double)n;
    printf("  auth map packed                   %8.1f ns\n", pack);

    t0 = s_ns();
    for (long i = 0; i < n; i++) {
        gw_auth_check(cached, GW_ACCESS_USER, header, now, &claims, &res);
        gw_rate_key_t k = {"user", claims.sub, strlen(claims.sub)};
        gw_rate_take(rate, budget, &k, 1, s_ns(), &rr);
        msgpack_sbuffer_clear(&sbuf);
        mb_jwt_pack_auth(&pk, &claims);
    }
    printf("  whole path (check+count+pack)     %8.1f ns per authenticated request\n",
           (double)(s_ns() - t0) / (double)n);
    msgpack_sbuffer_destroy(&sbuf);
    gw_rate_destroy(&rate);
    gw_auth_destroy(&cached);
    gw_auth_destroy(&uncached);
    free(token);
    return 0;
}
