/*
 * clock.h - the one monotonic clock every timing in the project reads.
 *
 * CLOCK_MONOTONIC in milliseconds (double): for durations, deadlines and
 * timestamps compared within one process; never wall-clock time.
 */
#ifndef LV_BASE_CLOCK_H
#define LV_BASE_CLOCK_H

/* Milliseconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double lv_now_ms(void);

#endif
