/* worker.h - TEMPORARY: the old names of engine/scheduler.h, while server/ moves over. */
#ifndef LV_SERVER_WORKER_H
#define LV_SERVER_WORKER_H
#include "engine/scheduler.h"
#define wk_job           sched_job
#define wk_job_new       sched_job_new
#define wk_job_release   sched_job_release
#define wk_job_cancel    sched_job_cancel
#define wk_job_wait      sched_job_wait
#define wk_job_take      sched_job_take
#define worker           sched
#define wk_config        sched_config
#define wk_stats         sched_stats
#define worker_submit    sched_submit
#define worker_get_stats sched_get_stats
#define worker_stop      sched_stop
#define worker_free      sched_free
#endif
