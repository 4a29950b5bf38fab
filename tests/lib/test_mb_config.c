/*  mb_config: flag > environment > default, strict integers. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdlib.h>

#include "mb_config.h"
#include "mb_error.h"

Test(mb_config, usage)
{
    setenv("MUSICBUS_HEARTBEAT_MS", "250", 1);
    cr_assert_eq(mb_config_env_long(MB_ENV_HEARTBEAT_MS, MB_DEFAULT_HEARTBEAT_MS, 10, 60000), 250);

    unsetenv("MUSICBUS_BUS");
    cr_assert_str_eq(mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS), "tcp://127.0.0.1:5555");

    long liveness;
    cr_assert_eq(mb_config_parse_long("5", 1, 100, &liveness), 0);
    cr_assert_eq(liveness, 5);
}

Test(mb_config, empty_env_counts_as_unset)
{
    setenv("MUSICBUS_DATA", "", 1);
    cr_assert_str_eq(mb_config_env(MB_ENV_DATA, "./var"), "./var");
    setenv("MUSICBUS_DATA", "/srv/mb", 1);
    cr_assert_str_eq(mb_config_env(MB_ENV_DATA, "./var"), "/srv/mb");
    unsetenv("MUSICBUS_DATA");
    cr_assert_null(mb_config_env(MB_ENV_DATA, NULL));
}

Test(mb_config, parse_long_accepts_whole_numbers_in_range)
{
    long v = 0;
    cr_assert_eq(mb_config_parse_long("0", 0, 10, &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(mb_config_parse_long("-7", -10, 10, &v), 0);
    cr_assert_eq(v, -7);
    cr_assert_eq(mb_config_parse_long("+8", -10, 10, &v), 0);
    cr_assert_eq(v, 8);
    cr_assert_eq(mb_config_parse_long("10", 0, 10, &v), 0);
    cr_assert_eq(v, 10);
    cr_assert_eq(mb_config_parse_long("9223372036854775807", 0, LONG_MAX, &v), 0);
    cr_assert_eq(v, LONG_MAX);
}

Test(mb_config, parse_long_rejects_everything_else)
{
    const char *bad[] = {"",
                         " 5",
                         "5 ",
                         "5ms",
                         "0x10",
                         "1e3",
                         "1.5",
                         "-",
                         "+",
                         "abc",
                         "99999999999999999999",
                         "-99999999999999999999",
                         "11",
                         "-11"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long v = 12345;
        cr_assert_eq(mb_config_parse_long(bad[i], -10, 10, &v), MB_EINVAL, "'%s'", bad[i]);
        cr_assert_eq(v, 12345, "out untouched for '%s'", bad[i]);
    }
    long v;
    cr_assert_eq(mb_config_parse_long(NULL, 0, 10, &v), MB_EINVAL);
}

Test(mb_config, env_long_falls_back_on_unset_or_invalid)
{
    unsetenv("MUSICBUS_LIVENESS");
    cr_assert_eq(mb_config_env_long(MB_ENV_LIVENESS, 3, 1, 100), 3);
    setenv("MUSICBUS_LIVENESS", "lots", 1);
    cr_assert_eq(mb_config_env_long(MB_ENV_LIVENESS, 3, 1, 100), 3);
    setenv("MUSICBUS_LIVENESS", "1000", 1);
    cr_assert_eq(mb_config_env_long(MB_ENV_LIVENESS, 3, 1, 100), 3);
    setenv("MUSICBUS_LIVENESS", "100", 1);
    cr_assert_eq(mb_config_env_long(MB_ENV_LIVENESS, 3, 1, 100), 100);
}
