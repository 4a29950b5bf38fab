#!/bin/sh
# Builds one json_pick binary per library into ${1:-.} and runs them.
set -e
out=${1:-.}
dir=$(dirname "$0")
gcc -O2 -Wall -Wextra -D_GNU_SOURCE -DUSE_JANSSON -o "$out/json_pick-jansson" "$dir/json_pick.c" $(pkg-config --cflags --libs jansson)
gcc -O2 -Wall -Wextra -D_GNU_SOURCE -DUSE_CJSON -o "$out/json_pick-cjson" "$dir/json_pick.c" $(pkg-config --cflags --libs libcjson)
gcc -O2 -Wall -Wextra -D_GNU_SOURCE -DUSE_JSONC -o "$out/json_pick-jsonc" "$dir/json_pick.c" $(pkg-config --cflags --libs json-c)
for lib in jansson cjson jsonc; do "$out/json_pick-$lib" "${2:-200000}"; done
