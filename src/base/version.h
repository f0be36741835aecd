/* version.h - the project's version, one define that every tool and the
 * server report (--version, GET /api/version). */
#ifndef LV_BASE_VERSION_H
#define LV_BASE_VERSION_H

#define LLAVA_VERSION "0.17.0"

#endif
