/*
 * clock.c - the monotonic clock (clock.h).
 */
#include "base/clock.h"

#include <time.h>

double lv_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
