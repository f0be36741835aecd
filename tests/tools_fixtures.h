/* tools_fixtures.h - the two functions the tool-calling tests offer (test_tools,
 * test_server_tools), as request JSON: bounded parameters (an enum, a short
 * string, an integer, a boolean) so that the demo model's calls end. */
#ifndef LV_TEST_TOOLS_FIXTURES_H
#define LV_TEST_TOOLS_FIXTURES_H

#define WEATHER                                                                                    \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather of "  \
    "a "                                                                                           \
    "city\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","    \
    "\"maxLength\":8},\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\",\"unit\"]}}}"
#define COUNT                                                                                      \
    "{\"type\":\"function\",\"function\":{\"name\":\"count\",\"parameters\":{\"type\":\"object\"," \
    "\"properties\":{\"n\":{\"type\":\"integer\"},\"ok\":{\"type\":\"boolean\"}},\"required\":["   \
    "\"n\",\"ok\"]}}}"
#define TOOLS "\"tools\":[" WEATHER "," COUNT "]"

#endif
