# shellcheck shell=bash
# lib.sh - the integration harness, sourced by every tests/integration/test_*.sh.
#
# Each test file gets its own local backend (port 0, address written to a file), its
# own work directory, and mounts cwsfs for real with `cwsfs -f` in the background, a
# private mountpoint, a private log and session tags unique to the mount, so no test
# ever sees another's sandboxes. Everything that could hang runs under `timeout`; each
# case runs in a subshell under a watchdog; an EXIT trap lazily unmounts and kills
# whatever is left, also after a failure. Unmounting requires `fusermount3 -u` to exit 0
# and the daemon to exit 0 (so a wrapper's --error-exitcode counts), and the daemon's
# stderr must be free of suspicious words (ERROR, sanitizer reports, valgrind's ==PID==).
#
# Environment:
#   CWSFS_BIN       the binary under test (default build/cwsfs of the source tree)
#   CWSFS_WRAPPER   a command prefixing the daemon, e.g.
#                   "valgrind -q --error-exitcode=99 --leak-check=full"
#   IT_SCALE        multiplier of every time bound (default 1, 6 with a wrapper)
#   IT_KEEP=1       keep the work directory (logs) after the run
#   IT_ONLY="case_a case_b"  run only these cases of a file
#
# A test file looks like:
#   . "$(dirname "$0")/lib.sh"
#   it_start                       # backend + mount at $MNT
#   case_foo() { mksb foo; ...asserts on $SB...; }
#   it_case case_foo
#   it_done                        # unmount, check logs, exit status
#
# Only loopback: the backend listens on 127.0.0.1 and every mount gets endpoint= of it;
# credentials in the environment are removed so nothing is read or sent elsewhere.

set -u -o pipefail

IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IT_TOP=$(cd "$IT_DIR/../.." && pwd)
CWSFS_BIN=${CWSFS_BIN:-$IT_TOP/build/cwsfs}
case $CWSFS_BIN in /*) ;; *) CWSFS_BIN=$PWD/$CWSFS_BIN ;; esac
CWSFS_WRAPPER=${CWSFS_WRAPPER:-}
IT_BACKEND=${IT_BACKEND:-$IT_TOP/contrib/local-backend}
if [ -z "${IT_SCALE:-}" ]; then
    if [ -n "$CWSFS_WRAPPER" ]; then IT_SCALE=6; else IT_SCALE=1; fi
fi
IT_NAME=$(basename "$0" .sh)
IT_WORK=$(mktemp -d "${TMPDIR:-/tmp}/cwsfs-it.$IT_NAME.XXXXXX") || exit 1
# others may pass through (not list): the backend's sandboxes mount their roots below it
# from their user namespace, as an unprivileged uid
chmod 711 "$IT_WORK"
IT_SUSPICIOUS='ERROR|AddressSanitizer|LeakSanitizer|runtime error|==[0-9]+=='
IT_LOG_ALLOW=${IT_LOG_ALLOW:-} # an ERE of log lines a test expects (removed before the check)
IT_FAILED=0
IT_CASES=0
IT_URL=
IT_BACKEND_PID=
IT_TAG=
MNT=
declare -A IT_MOUNT_PID=() IT_MOUNT_LOG=()
IT_MOUNT_SEQ=0

# A Python for fsop.py that does not depend on $HOME (set below).
if [ -x /usr/bin/python3 ]; then IT_PY=/usr/bin/python3; else IT_PY=$(command -v python3); fi
fsop() { timeout "$(t 30)" "$IT_PY" "$IT_DIR/fsop.py" "$@"; }
# w1 FILE [--append]: stdin to FILE in one write(2); fails the case on error.
w1() { must "$IT_PY" "$IT_DIR/fsop.py" write1 "$@"; }
# w1_fails TEXT FILE [--append]: the same write must fail with TEXT (an errno name).
w1_fails() { local w=$1; shift; must_fail "$w" "$IT_PY" "$IT_DIR/fsop.py" write1 "$@"; }

# Never read or send real credentials, never reach a configured remote service.
unset CWSANDBOX_BASE_URL CWSANDBOX_API_KEY WANDB_SANDBOX_BASE_URL WANDB_API_KEY \
    WANDB_ENTITY WANDB_PROJECT WANDB_BASE_URL
mkdir -p "$IT_WORK/home"
export HOME=$IT_WORK/home
# A mount with no endpoint finds (or starts) the bundled backend at a private socket
# of this file, never at the machine's well-known one; it_backend_private_stop ends it.
export CWSB_SOCKET=$IT_WORK/pb/api.sock CWSB_STATE_DIR=$IT_WORK/pb-state
export CWSB_NO_PULL=1 # images come from the store, never from a registry
unset CWSB_API_KEY
export LC_ALL=C.UTF-8

# ---------------------------------------------------------------- output and asserts

it_log() { printf '# %s\n' "$*"; }
# A figure the lead reports (call counts and the like): grep '^FIGURE' in the output.
it_figure() { printf 'FIGURE %s: %s\n' "$IT_NAME" "$*"; }

# t SECONDS: a time bound scaled by IT_SCALE (integer seconds).
t() { echo $(($1 * IT_SCALE)); }

_it_where() { # the first caller outside lib.sh
    local i=1
    while [ "${BASH_SOURCE[$i]:-}" ] && [ "$(basename "${BASH_SOURCE[$i]}")" = lib.sh ]; do
        i=$((i + 1))
    done
    printf '%s:%s' "$(basename "${BASH_SOURCE[$i]:-?}")" "${BASH_LINENO[$((i - 1))]:-?}"
}

# fail MSG: end the current case (it runs in a subshell) as failed.
# Written to stderr so that it shows also from inside $(...); there, follow the
# substitution with `|| exit 1`.
fail() {
    printf 'FAIL [%s] %s\n' "$(_it_where)" "$*" >&2
    exit 1
}

_it_show() { # a value for a message: quoted, bounded
    local s=$1
    [ ${#s} -gt 400 ] && s="${s:0:400}...(${#1} chars)"
    printf '%q' "$s"
}

assert_eq() { # EXPECTED GOT [WHAT]
    [ "$1" == "$2" ] || fail "${3:-value}: expected $(_it_show "$1"), got $(_it_show "$2")"
}
assert_ne() { # UNEXPECTED GOT [WHAT]
    [ "$1" != "$2" ] || fail "${3:-value}: expected anything but $(_it_show "$1")"
}
assert_contains() { # HAYSTACK NEEDLE [WHAT]
    [[ $1 == *"$2"* ]] || fail "${3:-value}: expected to contain $(_it_show "$2"), got $(_it_show "$1")"
}
assert_not_contains() { # HAYSTACK NEEDLE [WHAT]
    [[ $1 != *"$2"* ]] || fail "${3:-value}: expected not to contain $(_it_show "$2"), got $(_it_show "$1")"
}
assert_match() { # STRING ERE [WHAT]
    [[ $1 =~ $2 ]] || fail "${3:-value}: expected to match /$2/, got $(_it_show "$1")"
}
assert_le() { # A B [WHAT]: integer A <= B
    [ "$1" -le "$2" ] || fail "${3:-value}: expected <= $2, got $1"
}
assert_file_eq() { # FILE EXPECTED: the whole content (read with a timeout)
    local got
    got=$(timeout "$(t 20)" cat -- "$1"; echo x) || fail "cat $1 failed or timed out"
    got=${got%x}
    [ "$got" == "$2" ] || fail "content of $1: expected $(_it_show "$2"), got $(_it_show "$got")"
}
assert_exists() { [ -e "$1" ] || [ -L "$1" ] || fail "$1 should exist"; }
assert_not_exists() { [ ! -e "$1" ] && [ ! -L "$1" ] || fail "$1 should not exist"; }

# must CMD...: run CMD under a timeout, fail the case when it does not exit 0.
IT_OUT=
must() {
    local rc
    IT_OUT=$(timeout "$(t ${IT_MUST_TIMEOUT:-30})" "$@" 2>&1)
    rc=$?
    [ $rc -eq 0 ] || fail "$(printf '%q ' "$@")exited $rc$([ $rc -eq 124 ] && echo ' (timeout)'): $(_it_show "$IT_OUT")"
}
# must_fail TEXT CMD...: CMD must exit non-zero (not by timeout) with TEXT (e.g. an
# errno's strerror) in its output.
must_fail() {
    local want=$1 rc
    shift
    IT_OUT=$(timeout "$(t ${IT_MUST_TIMEOUT:-30})" "$@" 2>&1)
    rc=$?
    [ $rc -eq 124 ] && fail "$(printf '%q ' "$@")timed out"
    [ $rc -ne 0 ] || fail "$(printf '%q ' "$@")succeeded; expected a failure with \"$want\""
    [[ $IT_OUT == *"$want"* ]] || fail "$(printf '%q ' "$@")failed without \"$want\": $(_it_show "$IT_OUT")"
}

# rd FILE: its content on stdout, bounded in time (fails the case on timeout).
rd() {
    local rc
    timeout "$(t ${IT_RD_TIMEOUT:-20})" cat -- "$1"
    rc=$?
    [ $rc -eq 124 ] && fail "cat $1 timed out"
    return $rc
}

# wait_for SECONDS CMD...: poll CMD until it succeeds; fail after SECONDS (scaled).
wait_for() {
    local limit=$(($(date +%s%N) / 1000000 + $(t $1) * 1000))
    shift
    until timeout "$(t 10)" "$@" >/dev/null 2>&1; do
        [ $(($(date +%s%N) / 1000000)) -lt $limit ] || fail "condition not met in time: $*"
        sleep 0.1
    done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ------------------------------------------------------------- ctl and sandboxes

# ctl DIR LINE...: write the lines (each with a newline) to DIR/ctl in one write(2),
# fail the case if the write fails.
ctl() {
    local d=$1
    shift
    must bash -c 'printf "%s\n" "${@:2}" > "$1/ctl"' _ "$d" "$@"
}
# ctl_try DIR LINE...: the same, return the status; output in IT_OUT.
ctl_try() {
    local d=$1 rc
    shift
    IT_OUT=$(timeout "$(t 30)" bash -c 'printf "%s\n" "${@:2}" > "$1/ctl"' _ "$d" "$@" 2>&1)
    rc=$?
    [ $rc -eq 124 ] && fail "write to $d/ctl timed out: $*"
    return $rc
}
# ctl_fails ERRTEXT DIR LINE...: the write must fail with ERRTEXT.
ctl_fails() {
    local want=$1
    shift
    ctl_try "$@" && fail "write of $(_it_show "${*:2}") to $1/ctl succeeded; expected \"$want\""
    [[ $IT_OUT == *"$want"* ]] || fail "write of $(_it_show "${*:2}") failed without \"$want\": $(_it_show "$IT_OUT")"
}

# mksb NAME [MOUNT]: mkdir a sandbox; its path in SB.
SB=
mksb() {
    SB=${2:-$MNT}/$1
    must mkdir -- "$SB"
}
it_status() { timeout "$(t 10)" cat -- "$1/status" 2>/dev/null; }
# last exec number of a sandbox (from reading ctl: "ID N")
it_last_exec() {
    local l
    l=$(timeout "$(t 10)" cat -- "$1/ctl") || return 1
    l=${l##* }
    printf '%s\n' "${l%%[!0-9]*}"
}
# run_in DIR LINE: exec LINE in the sandbox and wait for it; prints its stdout; fails
# the case if it exits non-zero. (A helper for setting up state inside a sandbox.)
run_in() {
    local d=$1 n code
    ctl "$d" "exec $2"
    n=$(it_last_exec "$d") || fail "reading $d/ctl"
    code=$(rd "$d/exec/$n/exit") || fail "reading $d/exec/$n/exit"
    [ "$code" == 0 ] || fail "exec $(_it_show "$2") exited $(_it_show "$code"): $(rd "$d/exec/$n/stderr" | head -c 400)"
    rd "$d/exec/$n/stdout"
}

# sigint_ends WHAT CMD...: start CMD in the background (job control on, so SIGINT is not
# ignored, as from a terminal), check it is still blocked after 1 s, send SIGINT (Ctrl-C)
# and require it to end within 2 s (scaled). The time it took is in IT_MS.
IT_MS=
sigint_ends() {
    local what=$1 pid i t0
    shift
    set -m
    "$@" >/dev/null 2>&1 &
    pid=$!
    set +m
    sleep 1
    kill -0 $pid 2>/dev/null || fail "$what did not block"
    t0=$(now_ms)
    kill -INT $pid
    for ((i = 0; i < 40 * IT_SCALE; i++)); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    IT_MS=$(($(now_ms) - t0))
    if kill -0 $pid 2>/dev/null; then
        kill -KILL $pid
        fail "$what still blocked $IT_MS ms after SIGINT"
    fi
    wait $pid 2>/dev/null
    return 0
}

# it_address FILE WHAT LOG: the URL a server started in the background writes to FILE,
# waited for up to 30 s; fails the case (with the tail of LOG) if it never comes.
it_address() {
    local i
    for ((i = 0; i < 300; i++)); do
        [ -s "$1" ] && break
        sleep 0.1
    done
    [ -s "$1" ] || fail "$2 did not start: $(tail -5 "$3" 2>/dev/null)"
    cat "$1"
}

# it_fault_proxy DIR MODE ARG: faultproxy.js (MODE and ARG as its usage says)
# in front of the backend; its URL in FAULT_URL, its pid in FAULT_PID, its log DIR/log.
# shellcheck disable=SC2034 # FAULT_URL and FAULT_PID are for the test files
it_fault_proxy() {
    local d=$1
    mkdir -p "$d"
    node "$IT_DIR/faultproxy.js" "$IT_URL" "$d/addr" "$2" "$3" 2>"$d/log" &
    FAULT_PID=$!
    FAULT_URL=$(it_address "$d/addr" "fault proxy $2" "$d/log") || exit 1
}

# ------------------------------------------------------------------ call counts

# calls_of RPC [URL]: the backend's count of RPC calls.
calls_of() {
    local j
    j=$(curl -s --max-time 10 "${2:-$IT_URL}/_local/calls") || {
        echo "calls_of: backend unreachable" >&2
        echo -1
        return 1
    }
    j=$(printf '%s' "$j" | grep -o "\"$1\":[0-9]*") || { echo -1; return 1; }
    echo "${j#*:}"
}
# calls_all [URL]: "Rpc=N ..." for every rpc with a non-zero count.
calls_all() {
    curl -s --max-time 10 "${1:-$IT_URL}/_local/calls" | tr -d '{}\n' | tr ',' '\n' |
        sed -n 's/^"\([A-Za-z]*\)":\([1-9][0-9]*\)$/\1=\2/p' | tr '\n' ' '
}
# calls_mark: remember every count now; calls_since RPC: the increase since the mark.
declare -A IT_MARK=()
calls_mark() {
    local j kv
    j=$(curl -s --max-time 10 "$IT_URL/_local/calls") || fail "backend unreachable"
    IT_MARK=()
    for kv in $(printf '%s' "$j" | tr -d '{}"\n' | tr ',' ' '); do
        IT_MARK[${kv%%:*}]=${kv#*:}
    done
}
calls_since() {
    local now
    now=$(calls_of "$1") || fail "calls_of $1"
    echo $((now - ${IT_MARK[$1]:-0}))
}
# calls_since_all: "Rpc=+N ..." for every rpc that moved since the mark.
calls_since_all() {
    local j kv k v out=
    j=$(curl -s --max-time 10 "$IT_URL/_local/calls") || return 1
    for kv in $(printf '%s' "$j" | tr -d '{}"\n' | tr ',' ' '); do
        k=${kv%%:*} v=${kv#*:}
        v=$((v - ${IT_MARK[$k]:-0}))
        [ $v -ne 0 ] && out+="$k=$v "
    done
    echo "${out% }"
}

# ------------------------------------------------------------- backend and mounts

# it_backend_start [extra server args]: start the local backend on 127.0.0.1:0.
it_backend_start() {
    local addr=$IT_WORK/backend.addr i
    rm -f "$addr"
    [ -d "$IT_BACKEND/node_modules" ] || { echo "FAIL: $IT_BACKEND/node_modules missing (npm ci)"; exit 1; }
    node "$IT_BACKEND/server.js" --listen 127.0.0.1:0 --state-dir "$IT_WORK/state" \
        --address-file "$addr" "$@" >"$IT_WORK/backend.out" 2>>"$IT_WORK/backend.log" &
    IT_BACKEND_PID=$!
    for ((i = 0; i < 300; i++)); do
        [ -s "$addr" ] && break
        kill -0 "$IT_BACKEND_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -s "$addr" ]; then
        echo "FAIL: the local backend did not start:"
        tail -20 "$IT_WORK/backend.log"
        exit 1
    fi
    IT_URL=$(cat "$addr")
    case $IT_URL in http://127.0.0.1:*) ;; *) echo "FAIL: backend address $IT_URL is not loopback"; exit 1 ;; esac
}

# it_backend_private_stop: SIGTERM the bundled backend a mount started at
# $CWSB_SOCKET (its pid file), wait for it; 0 when none ran or it exited.
it_backend_private_stop() {
    local pid i
    pid=$(cat "${CWSB_SOCKET%/*}/backend.pid" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    return 1
}

# it_backend_stop: SIGTERM, wait for its cleanup (it stops its sandboxes).
it_backend_stop() {
    local i
    [ -n "$IT_BACKEND_PID" ] || return 0
    kill -TERM "$IT_BACKEND_PID" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$IT_BACKEND_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$IT_BACKEND_PID" 2>/dev/null
    wait "$IT_BACKEND_PID" 2>/dev/null
    IT_BACKEND_PID=
}

# it_mount MNT [OPTIONS [URL]]: mount cwsfs -f at MNT against the backend (or URL; "none"
# for no endpoint= option), with -o endpoint=URL,OPTIONS; tags=$IT_TAG is added unless OPTIONS sets tags= (or
# starts with "notags"). Waits for the mount; fails the file (or case) if the daemon
# dies first. The daemon's stderr goes to $IT_WORK/cwsfs.N.log (IT_LAST_LOG).
IT_LAST_LOG=
IT_MOUNT_RC=
it_mount() {
    it_mount_try "$@" && return 0
    if [ "$IT_MOUNT_RC" = timeout ]; then
        echo "FAIL: $1 not mounted after $((20 * IT_SCALE)) s; log:"
    else
        echo "FAIL: cwsfs exited ($IT_MOUNT_RC) before mounting $1; its log:"
    fi
    tail -30 "$IT_LAST_LOG"
    exit 1
}
# it_mount_try MNT [OPTIONS [URL]]: the same, but returns 1 when the daemon exits
# before mounting (its status in IT_MOUNT_RC, its log in IT_LAST_LOG) or does not mount
# in time (IT_MOUNT_RC=timeout; the daemon is killed).
it_mount_try() {
    local mnt=$1 opts=${2:-} url=${3:-$IT_URL} log pid i
    [ "$url" = none ] && url= # no endpoint= (what the environment says)
    mkdir -p "$mnt"
    mountpoint -q "$mnt" && fail "$mnt is already a mountpoint"
    case ",$opts," in
    *,tags=*) ;;
    ,notags,*) opts=${opts#notags} opts=${opts#,} ;;
    *) opts="tags=$IT_TAG${opts:+,$opts}" ;;
    esac
    IT_MOUNT_SEQ=$((IT_MOUNT_SEQ + 1))
    log=$IT_WORK/cwsfs.$BASHPID.$IT_MOUNT_SEQ.log
    # shellcheck disable=SC2086 # the wrapper is a command line
    local o=${url:+endpoint=$url}
    [ -n "$opts" ] && o=${o:+$o,}$opts
    $CWSFS_WRAPPER "$CWSFS_BIN" "$mnt" -f ${o:+-o "$o"} >"$log.out" 2>"$log" </dev/null &
    pid=$!
    IT_MOUNT_PID[$mnt]=$pid
    echo "$pid $mnt" >>"$IT_WORK/mounts" # for _it_unmount_leftovers
    IT_MOUNT_LOG[$mnt]=$log
    IT_LAST_LOG=$log
    for ((i = 0; i < 200 * IT_SCALE; i++)); do
        mountpoint -q "$mnt" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            IT_MOUNT_RC=$?
            unset "IT_MOUNT_PID[$mnt]"
            return 1
        fi
        sleep 0.1
    done
    IT_MOUNT_RC=timeout
    kill -KILL "$pid" 2>/dev/null
    timeout 10 fusermount3 -uz "$mnt" 2>/dev/null
    unset "IT_MOUNT_PID[$mnt]"
    return 1
}

# it_check_log LOG: no suspicious words (beyond IT_LOG_ALLOW). Returns 1 and prints
# the lines otherwise.
it_check_log() {
    local bad
    [ -f "$1" ] || return 0
    if [ -n "$IT_LOG_ALLOW" ]; then
        bad=$(grep -Ev -- "$IT_LOG_ALLOW" "$1" | grep -E -- "$IT_SUSPICIOUS")
    else
        bad=$(grep -E -- "$IT_SUSPICIOUS" "$1")
    fi
    [ -z "$bad" ] && return 0
    echo "FAIL: suspicious lines in the daemon's log $1:"
    printf '%s\n' "$bad" | head -40 | sed 's/^/    /'
    return 1
}

# it_unmount MNT: `fusermount3 -u` must exit 0, the daemon must exit 0 soon after,
# and its log must be clean. Returns non-zero (and says why) otherwise.
it_unmount() {
    local mnt=$1 pid=${IT_MOUNT_PID[$1]:-} rc i out ok=0
    out=$(timeout "$(t 20)" fusermount3 -u "$mnt" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL: fusermount3 -u $mnt exited $rc: $out"
        timeout 10 fusermount3 -uz "$mnt" 2>/dev/null
        ok=1
    fi
    if [ -n "$pid" ]; then
        for ((i = 0; i < 200 * IT_SCALE; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "FAIL: cwsfs ($pid) still running $((20 * IT_SCALE)) s after unmounting $mnt"
            # where it is stuck, for whoever reads the failure
            command -v gdb >/dev/null && timeout 30 gdb -q -batch -p "$pid" -ex 'thread apply all bt' 2>/dev/null |
                grep -E '^(Thread|#)' | sed 's/^/    /'
            kill -KILL "$pid" 2>/dev/null
            ok=1
        fi
        wait "$pid"
        rc=$?
        if [ $rc -ne 0 ]; then
            echo "FAIL: cwsfs for $mnt exited with status $rc"
            tail -20 "${IT_MOUNT_LOG[$mnt]}" | sed 's/^/    /'
            ok=1
        fi
        unset "IT_MOUNT_PID[$mnt]"
    fi
    it_check_log "${IT_MOUNT_LOG[$mnt]:-/nonexistent}" || ok=1
    return $ok
}

# ------------------------------------------------------------------ process trees

# The descendants of PID (children first), by walking /proc.
_it_descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        _it_descendants "$c"
        echo "$c"
    done
}
# kill_tree PID [SIG]: PID and all its descendants.
kill_tree() {
    local p
    for p in $(_it_descendants "$1") "$1"; do kill "-${2:-TERM}" "$p" 2>/dev/null; done
}

# ------------------------------------------------------------------ lifecycle

_it_cleanup() {
    local m p rc=$?
    trap - EXIT INT TERM
    for m in "${!IT_MOUNT_PID[@]}"; do
        timeout 10 fusermount3 -uz "$m" 2>/dev/null
    done
    for m in "${!IT_MOUNT_PID[@]}"; do
        p=${IT_MOUNT_PID[$m]}
        kill -TERM "$p" 2>/dev/null
    done
    sleep 0.2
    for m in "${!IT_MOUNT_PID[@]}"; do
        p=${IT_MOUNT_PID[$m]}
        kill -KILL "$p" 2>/dev/null
        it_check_log "${IT_MOUNT_LOG[$m]}" >/dev/null || { it_check_log "${IT_MOUNT_LOG[$m]}"; rc=1; }
    done
    _it_unmount_leftovers
    it_backend_stop
    it_backend_private_stop
    # Whatever the cases left running (readers, fake servers).
    for p in $(ps -o pid= --ppid $$ 2>/dev/null); do
        kill_tree "$p" KILL
    done
    if [ "${IT_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        echo "# work directory kept: $IT_WORK"
    else
        rm -rf --one-file-system "$IT_WORK" 2>/dev/null
    fi
    exit $rc
}

# it_init [BACKEND ARGS...]: checks, traps, a unique tag, the backend (no mount).
# shellcheck disable=SC2120 # test files pass backend arguments
it_init() {
    [ -x "$CWSFS_BIN" ] || { echo "FAIL: $CWSFS_BIN is not an executable (set CWSFS_BIN)"; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "FAIL: the local backend needs root"; exit 1; }
    trap _it_cleanup EXIT
    trap 'exit 130' INT TERM
    IT_TAG="it-${IT_NAME//_/-}-$$-$RANDOM"
    it_backend_start "$@"
}

# it_start [MOUNT OPTIONS]: it_init, then mount at $MNT.
it_start() {
    it_init
    MNT=$IT_WORK/mnt
    it_mount "$MNT" "${1:-}"
    it_log "backend $IT_URL, mount $MNT, tag $IT_TAG, binary $CWSFS_BIN${CWSFS_WRAPPER:+ under $CWSFS_WRAPPER}"
}

# Mounts a case made and could not unmount itself (the watchdog kills a case with
# SIGKILL, so its EXIT trap never runs): unmounted by the test file's shell.
_it_unmount_leftovers() {
    local pid m
    [ -f "$IT_WORK/mounts" ] || return 0
    while read -r pid m; do
        # /proc/mounts, not mountpoint(1): a mount whose daemon was killed fails stat
        [ "$m" != "$MNT" ] && awk -v m="$m" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts ||
            continue
        timeout 10 fusermount3 -uz "$m" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
    done <"$IT_WORK/mounts"
}

# it_case FUNC [TIMEOUT]: run FUNC in a subshell, in its own process group, under a
# watchdog (default 120 s, scaled); print ok/FAIL with the time it took. Whatever the
# case leaves running in its group is killed after it; mounts it made and did not
# unmount are lazily unmounted and their daemons killed.
_it_case_exit() {
    local m rc=$?
    for m in "${!IT_MOUNT_PID[@]}"; do
        [ "$m" = "$MNT" ] && continue
        timeout 10 fusermount3 -uz "$m" 2>/dev/null
        kill -KILL "${IT_MOUNT_PID[$m]}" 2>/dev/null
        it_check_log "${IT_MOUNT_LOG[$m]}" >&2 || rc=1
    done
    exit $rc
}
it_case() {
    local fn=$1 limit t0 pid wd rc ms
    limit=$(t "${2:-120}")
    if [ -n "${IT_ONLY:-}" ] && [[ " $IT_ONLY " != *" $fn "* ]]; then return 0; fi
    IT_CASES=$((IT_CASES + 1))
    t0=$(now_ms)
    set -m
    (
        trap _it_case_exit EXIT
        "$fn"
    ) &
    pid=$!
    set +m
    (
        sleep "$limit"
        echo "FAIL [$fn] watchdog: still running after $limit s" >&2
        kill -KILL -- "-$pid"
    ) &
    wd=$!
    wait "$pid"
    rc=$?
    # the watchdog first (else it would fire when its sleep dies), then its sleep
    local wd_kids
    wd_kids=$(_it_descendants "$wd")
    kill -KILL "$wd" 2>/dev/null
    [ -n "$wd_kids" ] && kill -KILL $wd_kids 2>/dev/null
    wait "$wd" 2>/dev/null
    kill -KILL -- "-$pid" 2>/dev/null
    [ $rc -eq 0 ] || _it_unmount_leftovers
    ms=$(($(now_ms) - t0))
    if [ $rc -eq 0 ]; then
        printf 'ok   %-40s %d.%03ds\n' "$fn" $((ms / 1000)) $((ms % 1000))
    else
        printf 'FAIL %-40s %d.%03ds\n' "$fn" $((ms / 1000)) $((ms % 1000))
        IT_FAILED=$((IT_FAILED + 1))
    fi
    # A daemon that died under a case fails that case and all the rest.
    if [ -n "$MNT" ] && [ -n "${IT_MOUNT_PID[$MNT]:-}" ] && ! kill -0 "${IT_MOUNT_PID[$MNT]}" 2>/dev/null; then
        echo "FAIL: cwsfs died during $fn; log tail:"
        tail -30 "${IT_MOUNT_LOG[$MNT]}" | sed 's/^/    /'
        exit 1
    fi
}

# it_done: unmount $MNT (and any other mount still up), check logs, exit.
it_done() {
    local m
    for m in "${!IT_MOUNT_PID[@]}"; do
        it_unmount "$m" || IT_FAILED=$((IT_FAILED + 1))
    done
    if [ $IT_FAILED -ne 0 ]; then
        echo "# $IT_NAME: $IT_FAILED failure(s) in $IT_CASES case(s)"
        for m in "$IT_WORK"/cwsfs.*.log; do
            [ -f "$m" ] || continue
            echo "# --- tail of $m"
            tail -25 "$m" | sed 's/^/#   /'
        done
        exit 1
    fi
    echo "# $IT_NAME: all $IT_CASES case(s) passed"
    exit 0
}
