# shellcheck shell=bash
# scripts/lib.sh — shell code shared by scripts/up and scripts/test.
# Sourced, never run. Sets MB_ROOT to the top of the checkout.

MB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Packages every build needs. libcriterion-dev is among them because the
# top-level CMake configure step looks for Criterion (tests/CMakeLists.txt)
# even when only the executables are built.
# shellcheck disable=SC2034 # used by the scripts that source this file
MB_BUILD_PACKAGES=(build-essential cmake pkg-config libzmq3-dev libczmq-dev
    liblmdb-dev libmsgpack-dev libsodium-dev libmicrohttpd-dev libjansson-dev
    libwslay-dev libavformat-dev libavcodec-dev libavfilter-dev libavutil-dev
    libswresample-dev libswscale-dev libcriterion-dev)

# Plain progress lines go to stderr so stdout stays free for the stack.
mb_say() { printf '%s: %s\n' "${MB_SCRIPT:-musicbus}" "$*" >&2; }
mb_die() { mb_say "error: $*"; exit 1; }

# mb_ensure_packages PKG... — installs with apt-get only the packages that
# are not installed yet, so a warm machine never touches the network.
mb_ensure_packages() {
    local missing=() pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ $status == ii* ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    mb_say "installing ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || mb_die "not root and no sudo: install ${missing[*]} by hand"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >&2 || mb_die "apt-get update failed"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 \
        || mb_die "apt-get install ${missing[*]} failed"
}

# mb_cmake_build DIR [TYPE] [TARGET...] — configures DIR and builds it
# incrementally. The configure step runs every time (a second or two when
# nothing changed) because the tree adds parts by globbing for their
# CMakeLists.txt, which a cached build folder would not notice.
mb_cmake_build() {
    local dir=$1 type=${2:-}
    shift 2 || shift $#
    local args=(-S "$MB_ROOT" -B "$dir")
    [[ -n $type ]] && args+=(-DCMAKE_BUILD_TYPE="$type")
    cmake "${args[@]}" >&2 || return 1
    local targets=()
    (($# > 0)) && targets=(--target "$@")
    cmake --build "$dir" -j "$(nproc)" "${targets[@]}" >&2
}
