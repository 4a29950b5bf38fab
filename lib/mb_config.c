/*  mb_config — flags, else environment, else defaults. */
#include "mb_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "mb_error.h"
#include "mb_log.h"

const char *mb_config_env(const char *name, const char *fallback)
{
    const char *value = getenv(name);
    return value && *value ? value : fallback;
}

int mb_config_parse_long(const char *text, long min, long max, long *out)
{
    if (!text)
        return MB_EINVAL;
    /* strtol skips leading blanks; a setting with blanks is a typo we
       report rather than guess at. */
    if (!(isdigit((unsigned char)text[0]) ||
          ((text[0] == '-' || text[0] == '+') && isdigit((unsigned char)text[1]))))
        return MB_EINVAL;
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno == ERANGE || *end != '\0' || value < min || value > max)
        return MB_EINVAL;
    *out = value;
    return 0;
}

long mb_config_env_long(const char *name, long fallback, long min, long max)
{
    const char *text = mb_config_env(name, NULL);
    if (!text)
        return fallback;
    long value;
    if (mb_config_parse_long(text, min, max, &value) != 0) {
        mb_warn(0, "%s=%s is not a whole number in [%ld, %ld]; using %ld", name, text, min, max,
                fallback);
        return fallback;
    }
    return value;
}
