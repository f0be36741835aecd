/*
 * json_type.h - the name of a JSON value's type, as error messages say it.
 *
 * Every parser of JSON (safetensors headers, configs, OpenAI request bodies)
 * words "expected X, got Y" the same way, in OpenAI's wording: "an object",
 * "an array", "a string", "an integer", "a decimal", "a boolean", "null".
 */
#ifndef LV_IO_JSON_TYPE_H
#define LV_IO_JSON_TYPE_H

#include <jansson.h>

/* The type of v with its article ("an integer"); "nothing" for NULL. */
const char *json_type_name(const json_t *v);

#endif
