#!/usr/bin/env bash
# test_install.sh - what `cmake --install` puts on a machine: the man page renders
# without a warning and names every option `cwsfs -h` prints; an install into a
# DESTDIR holds the expected files, none naming the build or source tree; the
# installed binary, run as mount(8) runs it, finds the installed local backend; the
# systemd units pass `systemd-analyze verify`. No backend of the harness: the mount
# case starts the installed one at this file's private socket.
. "$(dirname "$0")/lib.sh"

IT_BUILD=$(cd "$(dirname "$CWSFS_BIN")" && pwd)
IT_PAGE=$IT_BUILD/cwsfs.1

# The options `cwsfs -h` lists: "-o NAME" and the flags, from the column before each
# description (the help's descriptions start at column 27).
help_options() {
    "$CWSFS_BIN" -h | grep -E '^ {2,}-' | cut -c1-27 |
        grep -oE -- '-o [a-z_0-9]+|--?[A-Za-z][a-z-]*' | sort -u
}

case_man_renders() {
    [ -f "$IT_PAGE" ] || fail "$IT_PAGE is not built (is scdoc installed?)"
    MANWIDTH=80 man --warnings -l "$IT_PAGE" >"$IT_WORK/man.txt" 2>"$IT_WORK/man.err" ||
        fail "man -l $IT_PAGE failed: $(cat "$IT_WORK/man.err")"
    assert_eq "" "$(cat "$IT_WORK/man.err")" "man --warnings"
    assert_contains "$(cat "$IT_WORK/man.txt")" "SYNOPSIS" "the rendered page"
}

case_man_has_every_option() {
    local text opt missing=() n=0
    text=$(MANWIDTH=80 man -l "$IT_PAGE" 2>/dev/null | col -b)
    [ -n "$text" ] || fail "man -l $IT_PAGE printed nothing"
    while read -r opt; do
        n=$((n + 1))
        # described: a term line of the page (at the body's indent, alone or after
        # another spelling: "-d, -o debug") starts with it
        grep -qE -- "^ {7}([^ ].*, )?${opt}([=, ]|$)" <<<"$text" || missing+=("$opt")
    done < <(help_options)
    [ "$n" -ge 25 ] || fail "only $n options read from cwsfs -h: the parsing broke"
    [ ${#missing[@]} -eq 0 ] || fail "in cwsfs -h, not in cwsfs(1): ${missing[*]}"
    # ctl verbs, from src/ctl.c's table
    for opt in $(grep -oE '^ +\{"[a-z]+", CTL_' "$IT_TOP/src/ctl.c" | grep -oE '[a-z]+'); do
        grep -qE "(^|[ ,])$opt( |,|$)" <<<"$text" || missing+=("ctl $opt")
    done
    [ ${#missing[@]} -eq 0 ] || fail "ctl lines not in cwsfs(1): ${missing[*]}"
}

case_install_destdir() {
    local dest=$IT_WORK/dest f
    IT_OUT=$(DESTDIR=$dest timeout "$(t 120)" cmake --install "$IT_BUILD" --prefix /usr 2>&1) ||
        fail "cmake --install: $IT_OUT"
    for f in bin/cwsfs sbin/mount.fuse.cwsfs share/man/man1/cwsfs.1 \
        share/doc/cwsfs/README.md share/doc/cwsfs/COPYING \
        lib/systemd/system/cwsfs@.service lib/systemd/system/cwsandbox-local.service \
        lib/systemd/user/cwsfs@.service lib/systemd/user/cwsandbox-local.service \
        share/bash-completion/completions/cwsfs \
        share/cwsfs/local-backend/server.js share/cwsfs/local-backend/package.json \
        share/cwsfs/local-backend/lib/manager.js share/cwsfs/local-backend/README.md; do
        assert_exists "$dest/usr/$f"
    done
    assert_eq "../bin/cwsfs" "$(readlink "$dest/usr/sbin/mount.fuse.cwsfs")" "mount.fuse.cwsfs"
    assert_not_exists "$dest/usr/share/cwsfs/local-backend/test"
    assert_not_exists "$dest/usr/share/cwsfs/local-backend/bench"
    grep -q "ExecStart=/usr/bin/cwsfs " "$dest/usr/lib/systemd/system/cwsfs@.service" ||
        fail "cwsfs@.service does not run /usr/bin/cwsfs"
    # Nothing installed names the tree it came from: not the binary (strings), not a
    # text file, not a link. The sanitizers keep source paths in their reports' data;
    # such a build is tested, never installed.
    local skip=()
    if [[ $(nm -D "$dest/usr/bin/cwsfs" 2>/dev/null) == *__asan_init* ]]; then
        it_log "a sanitizer build: its binary is not checked for build paths"
        skip=(--exclude=cwsfs)
    else
        assert_eq "" "$(strings "$dest/usr/bin/cwsfs" | grep -F -e "$IT_BUILD" -e "$IT_TOP")" \
            "build or source paths in the installed binary"
    fi
    assert_eq "" "$(grep -rlF "${skip[@]}" -e "$IT_BUILD" -e "$IT_TOP" "$dest" 2>/dev/null)" \
        "installed files naming the build or source tree"
    assert_eq "" "$(find "$dest" -lname '/*')" "absolute links installed"
}

# The installed binary, through the mount helper as mount(8) runs it, with no
# endpoint: it must start the installed backend, not the source tree's.
case_installed_finds_backend() {
    local dest=$IT_WORK/dest mnt=$IT_WORK/imnt pid cmd
    [ -x "$dest/usr/bin/cwsfs" ] || fail "no install in $dest (case_install_destdir failed)"
    [ -d "$dest/usr/share/cwsfs/local-backend/node_modules" ] ||
        fail "the installed backend has no node_modules (run npm ci in contrib/local-backend)"
    mkdir -p "$mnt"
    IT_MUST_TIMEOUT=120 must "$dest/usr/sbin/mount.fuse.cwsfs" cwsfs "$mnt" \
        -o "rw,_netdev,logfile=$IT_WORK/installed.log,tags=$IT_TAG"
    mountpoint -q "$mnt" || fail "mount.fuse.cwsfs did not mount"
    echo "$(pgrep -n -f "cwsfs $mnt") $mnt" >>"$IT_WORK/mounts"
    pid=$(cat "${CWSB_SOCKET%/*}/backend.pid")
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    must fusermount3 -u "$mnt"
    it_backend_private_stop
    assert_contains "$cmd" "$dest/usr/share/cwsfs/local-backend/server.js" "the backend started"
    it_check_log "$IT_WORK/installed.log" || fail "errors in the installed mount's log"
}

case_units_verify() {
    local dest=$IT_WORK/dest d=$IT_WORK/units out f kind scope
    command -v systemd-analyze >/dev/null || {
        it_log "systemd-analyze not installed: units not verified"
        return 0
    }
    [ -x "$dest/usr/bin/cwsfs" ] || fail "no install in $dest (case_install_destdir failed)"
    for kind in system user; do
        scope=--system
        [ $kind = user ] && scope=--user
        mkdir -p "$d/$kind" "$d/xdg"
        # the binary the units name exists here only under DESTDIR
        for f in "$dest/usr/lib/systemd/$kind"/*.service; do
            sed "s#/usr/bin/cwsfs#$dest/usr/bin/cwsfs#" "$f" >"$d/$kind/${f##*/}"
        done
        # a template is verified through an instance; the .mount example with them
        mv "$d/$kind/cwsfs@.service" "$d/$kind/cwsfs@mnt-sb.service"
        [ $kind = system ] && cp "$IT_TOP/contrib/systemd/mnt-sb.mount" "$d/$kind/"
        out=$(cd "$d/$kind" && XDG_RUNTIME_DIR=$d/xdg timeout "$(t 60)" systemd-analyze \
            "$scope" verify --man=no ./* 2>&1) ||
            fail "systemd-analyze verify ($kind): $out"
        assert_eq "" "$out" "systemd-analyze verify ($kind)"
    done
}

# Type=notify: with NOTIFY_SOCKET set, cwsfs -f says READY=1 once the mount serves
# and STOPPING=1 when it unmounts (a datagram listener stands in for systemd).
case_sd_notify() {
    local sock=$IT_WORK/notify.sock got=$IT_WORK/notify.txt mnt=$IT_WORK/nmnt lp pid i
    if ! grep -q "sd_notify" <(nm -D "$CWSFS_BIN" 2>/dev/null); then
        it_log "cwsfs built without libsystemd: notification not tested"
        return 0
    fi
    "$IT_PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg + "\n")
        out.flush()
        if "STOPPING=1" in msg:
            break
' "$sock" "$got" &
    lp=$!
    wait_for 10 test -S "$sock" || fail "the listener did not start"
    mkdir -p "$mnt"
    NOTIFY_SOCKET=$sock $CWSFS_WRAPPER "$CWSFS_BIN" -f "$mnt" \
        -o "logfile=$IT_WORK/notify.log,tags=$IT_TAG" 2>>"$IT_WORK/notify.err" &
    pid=$!
    echo "$pid $mnt" >>"$IT_WORK/mounts" # unmounted by the harness if the case fails
    for ((i = 0; i < 600; i++)); do
        grep -q "READY=1" "$got" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || fail "cwsfs -f exited before READY=1"
        sleep 0.1
    done
    grep -q "READY=1" "$got" || fail "no READY=1"
    mountpoint -q "$mnt" || fail "READY=1 before the mount was up"
    must ls "$mnt"
    must fusermount3 -u "$mnt"
    wait "$pid" || fail "cwsfs -f exited $?"
    wait_for 10 grep -q "STOPPING=1" "$got" || fail "no STOPPING=1: $(cat "$got")"
    wait "$lp"
    it_backend_private_stop
    it_check_log "$IT_WORK/notify.log" || fail "errors in the log"
}

# The completion offers every -o option cwsfs -h prints, and completes them.
case_completion() {
    local f=$IT_TOP/contrib/completion/cwsfs out opt missing=()
    [ -f /usr/share/bash-completion/bash_completion ] ||
        fail "bash-completion is not installed (tests/setup.sh installs it)"
    # shellcheck disable=SC2016 # expanded by the inner bash
    out=$(bash -c '. /usr/share/bash-completion/bash_completion; . "$1"
        COMP_WORDS=(cwsfs /mnt -o cleanup,end); COMP_CWORD=3
        COMP_LINE="cwsfs /mnt -o cleanup,end"; COMP_POINT=${#COMP_LINE}
        _cwsfs; echo "${COMPREPLY[*]}"; echo "$_cwsfs_opts"' - "$f" 2>&1)
    assert_eq "cleanup,endpoint=" "$(head -1 <<<"$out")" "completion of -o cleanup,end"
    for opt in $(help_options | sed -n 's/^-o //p'); do
        grep -qE "(^| )$opt(=| |$)" <<<"$(tail -n +2 <<<"$out")" || missing+=("$opt")
    done
    [ ${#missing[@]} -eq 0 ] || fail "in cwsfs -h, not completed: ${missing[*]}"
}

[ "$(id -u)" = 0 ] || { echo "FAIL: the local backend needs root"; exit 1; }
trap _it_cleanup EXIT
trap 'exit 130' INT TERM
IT_TAG="it-install-$$-$RANDOM"
it_case case_man_renders
it_case case_man_has_every_option
it_case case_install_destdir 180
it_case case_installed_finds_backend 180
it_case case_units_verify
it_case case_sd_notify 180
it_case case_completion
it_done
