#!/usr/bin/env bash
# Every suite (test/check.sh) on the PostgreSQL versions of newer Debian
# releases, each in a root of its own built with debootstrap:
#   trixie (Debian 13) -> PostgreSQL 17
#   sid (unstable)     -> PostgreSQL 18
#   bash test/matrix.sh
# Needs root.  The roots are kept in $SUBSCRIPTION_MATRIX_CACHE (default
# /var/cache/subscription-matrix/<suite>) and reused while healthy;
# SUBSCRIPTION_MATRIX_REFRESH=1 builds them anew.  SUBSCRIPTION_MATRIX
# picks the pairs ("suite:version ..."); the roots named in
# SUBSCRIPTION_MATRIX_SANITIZE (default trixie) also run test/sanitize.sh,
# whose TAP lines count in their version's line.  Packages come from the Debian
# mirror that this machine's apt already uses, read from its sources at run
# time (or SUBSCRIPTION_MATRIX_MIRROR).
#
# What is tested is the working tree, not HEAD: its tracked files and the
# untracked ones that .gitignore does not exclude (so no build products), as
# they are on disk, so that uncommitted fixes are tested too.  In a fresh
# clone (CI) that is the same as HEAD.
#
# Prints, for each version, check.sh's output prefixed by "[NN] " and then
#   PostgreSQL NN (suite): N passed, M failed
# and exits non-zero if any version failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SUBSCRIPTION_MATRIX_CACHE:-/var/cache/subscription-matrix}
MATRIX=${SUBSCRIPTION_MATRIX:-"trixie:17 sid:18"}
# the roots that also run test/sanitize.sh (with AddressSanitizer there)
SANITIZE=${SUBSCRIPTION_MATRIX_SANITIZE-"trixie"}

say() { printf '\n== %s\n' "$*"; }
now() { date +%s; }

if [ "$(id -u)" -ne 0 ]; then
    echo "test/matrix.sh builds chroots and must run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

# The URI of the Debian archive in this machine's apt sources: the entry
# whose suite is this release's codename (not -security, not -updates), in
# deb822 .sources files or one-line .list files.
mirror_uri() {
    local codename files=() f
    codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
    for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
    [ ${#files[@]} -gt 0 ] && awk -v want="$codename" '
        function flush() {
            if (!found && uri != "" && (" " types " ") ~ / deb / && (want == "" || (" " suites " ") ~ (" " want " ")))
                { print uri; found = 1 }
            types = ""; suites = ""; uri = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        tolower($1) == "types:"  { types = $0; sub(/^[^:]*:/, "", types) }
        tolower($1) == "uris:"   { uri = $2 }
        tolower($1) == "suites:" { suites = $0; sub(/^[^:]*:/, "", suites) }
        tolower($1) == "enabled:" && tolower($2) == "no" { uri = ""; types = "" }
        END { flush() }' "${files[@]}" | head -1 | grep . && return 0
    files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
    [ ${#files[@]} -gt 0 ] && awk -v want="$codename" '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if (want == "" || $(i + 1) == want) { print $i; exit }
        }' "${files[@]}" | head -1 | grep . && return 0
    return 1
}

# PACKAGES inside a root of PostgreSQL $1: what test/lib.sh would install,
# and the compiler
root_packages() {
    echo "gcc make libc6-dev postgresql-$1 postgresql-server-dev-$1 postgresql-$1-pgtap libtap-parser-sourcehandler-pgtap-perl python3-psycopg"
}

MOUNTED=()
mount_root() {  # mount_root ROOT: what the server and the build need
    local r=$1
    mount -t proc proc "$r/proc" && MOUNTED+=("$r/proc")
    mount -t sysfs sysfs "$r/sys" && MOUNTED+=("$r/sys")
    mount --bind /dev "$r/dev" && MOUNTED+=("$r/dev")
    # the server's dynamic shared memory, apart from the host's
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm" && MOUNTED+=("$r/dev/shm")
}
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT
trap 'unmount_all; exit 130' INT TERM

# true when nothing is mounted under $1 (before removing it)
nothing_mounted_under() {
    ! awk '{ print $2 }' /proc/mounts | grep -q -e "^$1/" -e "^$1\$"
}

# run COMMAND... in root $1 with a clean environment (no PGHOST of ours)
in_root() {
    local r=$1; shift
    chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive CI="${CI:-}" "$@"
}

# build_root SUITE VERSION ROOT: debootstrap, then the packages; the marker
# file names the packages, so a root is healthy when it has them all
build_root() {
    local suite=$1 version=$2 r=$3 mirror
    mirror=${SUBSCRIPTION_MATRIX_MIRROR:-$(mirror_uri)} || {
        echo "no Debian mirror found in /etc/apt/sources*" >&2
        return 1
    }
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null || return 1
    fi
    nothing_mounted_under "$r" || { echo "$r has mounts; not removing it" >&2; return 1; }
    rm -rf "$r"
    mkdir -p "$r"
    say "debootstrap $suite into $r from $mirror"
    debootstrap --variant=minbase "$suite" "$r" "$mirror" >"$r.debootstrap.log" 2>&1 || {
        tail -20 "$r.debootstrap.log"
        return 1
    }
    # no service starts inside the root, no cluster that nobody uses
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod +x "$r/usr/sbin/policy-rc.d"
    mkdir -p "$r/etc/postgresql-common"
    echo "create_main_cluster = false" >"$r/etc/postgresql-common/createcluster.conf"
    # a mirror that serves a snapshot keeps sid's week-long Valid-Until
    # past: the root tests builds, it is not a system to keep up to date
    printf 'APT::Install-Recommends "false";\nAcquire::Check-Valid-Until "false";\n' \
        >"$r/etc/apt/apt.conf.d/90subscription-matrix"
    cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
    say "installing $(root_packages "$version") in $suite"
    mount_root "$r"
    in_root "$r" apt-get update -q >"$r.apt.log" 2>&1 \
        && in_root "$r" apt-get install -y -q $(root_packages "$version") >>"$r.apt.log" 2>&1 \
        && in_root "$r" apt-get clean
    local status=$?
    unmount_all
    if [ $status -ne 0 ]; then
        tail -20 "$r.apt.log"
        return 1
    fi
    root_packages "$version" >"$r/.subscription-matrix-ready"
}

root_healthy() {  # root_healthy VERSION ROOT
    [ -f "$2/.subscription-matrix-ready" ] \
        && [ "$(cat "$2/.subscription-matrix-ready")" = "$(root_packages "$1")" ] \
        && [ -x "$2/usr/lib/postgresql/$1/bin/pg_config" ] \
        && [ -x "$2/usr/lib/postgresql/$1/bin/postgres" ] \
        && [ -x "$2/usr/bin/pg_prove" ] \
        && chroot "$2" /usr/bin/id -u postgres >/dev/null 2>&1
}

# copy the working tree (see the top) into ROOT/build/subscription
copy_tree() {
    local dest=$1/build/subscription
    rm -rf "$dest"
    mkdir -p "$dest"
    (cd "$ROOT" && git ls-files -z -c -o --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$dest" -xf -
}

summary=()
any_failed=0
mkdir -p "$CACHE"
for pair in $MATRIX; do
    suite=${pair%%:*}
    version=${pair##*:}
    r=$CACHE/$suite
    label="PostgreSQL $version ($suite)"
    started=$(now)
    if [ -n "${SUBSCRIPTION_MATRIX_REFRESH:-}" ] || ! root_healthy "$version" "$r"; then
        if ! build_root "$suite" "$version" "$r" || ! root_healthy "$version" "$r"; then
            echo "$label: the root could not be built"
            summary+=("$label: 0 passed, 1 failed")
            any_failed=1
            continue
        fi
        echo "# $label: root built in $(($(now) - started)) s"
    else
        echo "# $label: reusing the root in $r"
    fi

    say "$label: bash test/check.sh"
    tested=$(now)
    copy_tree "$r"
    mount_root "$r"
    in_root "$r" /bin/bash -c 'cd /build/subscription && PG_MAJOR='"$version"' bash test/check.sh' 2>&1 \
        | tee "$r.check.log" | sed -u "s/^/[$version] /"
    status=${PIPESTATUS[0]}
    # AddressSanitizer runs where its runtime works (docs/testing.md: gcc
    # 12's hangs PostgreSQL on Debian 12), UBSan with it
    sanitized=0
    case " $SANITIZE " in *" $suite "*)
        say "$label: bash test/sanitize.sh"
        in_root "$r" /bin/bash -c 'cd /build/subscription && PG_MAJOR='"$version"' bash test/sanitize.sh' 2>&1 \
            | tee "$r.sanitize.log" | sed -u "s/^/[$version] /"
        [ "${PIPESTATUS[0]}" -ne 0 ] && status=1
        sanitized=1 ;;
    esac
    unmount_all
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$r.check.log" | tail -1)
    [ -n "$line" ] || line="0 passed, 1 failed"
    if [ "$sanitized" = 1 ]; then
        p=${line%% passed*}
        f=${line#* passed, }
        f=${f% failed}
        line="$((p + $(grep -c '^ok ' "$r.sanitize.log"))) passed, $((f + $(grep -c '^not ok ' "$r.sanitize.log"))) failed"
    fi
    if [ "$status" -ne 0 ] && [ "${line#* passed, }" = "0 failed" ]; then
        line="${line%%,*}, 1 failed"
    fi
    [ "$status" -ne 0 ] && any_failed=1
    echo "# $label: suites ran in $(($(now) - tested)) s (log: $r.check.log)"
    summary+=("$label: $line")
done

echo
for s in "${summary[@]}"; do echo "$s"; done
exit $any_failed
