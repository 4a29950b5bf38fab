/*  mb_config — flags, else environment, else defaults. */
#include "mb_config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/*  Reads at most `size` bytes of `path` into buf. Returns the count, or
    -1 with errno. */
static ssize_t s_read_secret_file(const char *what, const char *path, unsigned char *buf,
                                  size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        mb_warn(0, "%s file '%s' can be read by group or others; chmod 600 it", what, path);
    size_t used = 0;
    while (used < size) {
        ssize_t n = read(fd, buf + used, size - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    return (ssize_t)used;
}

int mb_config_secret(const char *what, const char *value, const char *file, unsigned char *buf,
                     size_t size, size_t *len)
{
    if (value) {
        *len = strlen(value);
        if (*len > size)
            *len = size;
        memcpy(buf, value, *len);
        return 0;
    }
    ssize_t n = s_read_secret_file(what, file, buf, size);
    if (n < 0) {
        mb_error(0, "cannot read %s file '%s': %s", what, file, strerror(errno));
        return MB_EIO;
    }
    *len = (size_t)n;
    /* Files written by echo or an editor end with a newline that is not
       part of the secret. */
    if (*len > 0 && buf[*len - 1] == '\n')
        (*len)--;
    if (*len > 0 && buf[*len - 1] == '\r')
        (*len)--;
    return 0;
}
