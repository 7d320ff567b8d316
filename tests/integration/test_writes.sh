#!/usr/bin/env bash
# Writes that must not lose or damage data: a write that fails locally (the spool is
# full) fails close and fsync and leaves the sandbox's file as it was.
. "$(dirname "$0")/lib.sh"
# The failed write is logged, with where its data was kept.
# shellcheck disable=SC2034 # read by lib.sh
IT_LOG_ALLOW='local spool|was not saved in the sandbox|never sent to the sandbox|Read-only file system'
it_start

mksb writes
FS=$SB
ctl "$FS" start || exit 1
R=$FS/root
inside() { run_in "$FS" "$1"; }

# A second mount whose spool is a 2 MiB tmpfs: an 8 MiB write runs out of space half
# way. The program sees ENOSPC on write and again at close (and fsync); the sandbox's
# file keeps its old content, never the truncated part.
case_enospc_keeps_old_file() {
    local sp=$IT_WORK/spool m2=$IT_WORK/m2 out
    mkdir -p "$sp"
    must mount -t tmpfs -o size=2m tmpfs "$sp"
    it_mount "$m2" "spool=$sp"
    must mkdir -p "$R/it/enospc"
    inside 'printf "old content\n" > /it/enospc/f' >/dev/null
    out=$(timeout "$(t 60)" "$IT_PY" - "$m2/.root/writes/it/enospc/f" <<'PY'
import errno, os, sys
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
res = []
try:
    for _ in range(128):
        os.write(fd, b"x" * 65536)
    res.append("write ok")
except OSError as e:
    res.append("write " + name(e))
try:
    os.fsync(fd)
    res.append("fsync ok")
except OSError as e:
    res.append("fsync " + name(e))
try:
    os.close(fd)
    res.append("close ok")
except OSError as e:
    res.append("close " + name(e))
print(" ".join(res))
PY
    )
    assert_eq "write ENOSPC fsync ENOSPC close ENOSPC" "$out" "write, fsync and close into a full spool"
    assert_eq "old content" "$(inside 'cat /it/enospc/f')" "the sandbox's file after the failed write"
    assert_contains "$(rd "$m2/writes/error")" "local spool" "error"
    it_unmount "$m2" || fail "unmount $m2"
    umount "$sp" || fail "umount $sp"
}

# A streamed replacement (above the 32 MiB WriteFile cap) whose writer is killed during
# close: while the send is in flight, and after it ended either way, the sandbox's file is
# the old one or the whole new one, never a part (the old code's `cat >` truncated it first).
case_cut_replacement_never_half_written() {
    local pid line got i
    must mkdir -p "$R/it/cut"
    inside 'printf "old content\n" > /it/cut/f' >/dev/null
    coproc W { "$IT_PY" - "$R/it/cut/f" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
chunk = b"n" * (1 << 20)
for _ in range(100):
    os.write(fd, chunk)
print("closing", flush=True)
os.close(fd)
PY
    }
    pid=$W_PID
    read -r -t "$(t 60)" line <&"${W[0]}" || fail "the writer did not reach close"
    assert_eq closing "$line" "writer"
    sleep 0.3
    kill -KILL "$pid" 2>/dev/null
    got=$(inside 'head -c 11 /it/cut/f; echo " $(stat -c %s /it/cut/f)"')
    [ "$got" = "old content 12" ] || [ "$got" = "nnnnnnnnnnn 104857600" ] ||
        fail "the sandbox's file during the send: $(_it_show "$got")"
    wait "$pid" 2>/dev/null
    for ((i = 0; i < 60; i++)); do
        [ -z "$(inside 'ls -A /it/cut | grep -v "^f$" || true')" ] && break
        sleep 1
    done
    got=$(inside 'head -c 11 /it/cut/f; echo " $(stat -c %s /it/cut/f)"; ls -A /it/cut | tr "\n" " "')
    it_log "after the send: $got"
    case $got in
    "old content 12"*|"nnnnnnnnnnn 104857600"*) ;;
    *) fail "the sandbox's file after the send: $(_it_show "$got")" ;;
    esac
    assert_eq "f" "$(inside 'ls -A /it/cut')" "no temporary left in the directory"
}

# 20 processes appending 100 lines each with >> at once: all 2000 lines arrive.
case_concurrent_appenders_lose_nothing() {
    local p
    must mkdir -p "$R/it/app"
    inside ': > /it/app/log' >/dev/null
    for p in $(seq 1 20); do
        (for i in $(seq 1 100); do echo "p$p line $i" >>"$R/it/app/log" || exit 1; done) &
    done
    wait
    assert_eq 2000 "$(inside 'wc -l < /it/app/log')" "lines after 20 x 100 concurrent appends"
    assert_eq 2000 "$(inside 'sort -u /it/app/log | wc -l')" "distinct lines"
}

# A line appended to a 40 MiB log sends that line, not the log: no ReadFile, no
# WriteFile, one StreamExec, and the byte counter grows by the line's size.
case_append_sends_only_new_bytes() {
    local before after
    must mkdir -p "$R/it/big"
    inside 'head -c 41943040 /dev/zero > /it/big/log' >/dev/null
    before=$(awk '/^cwsfs_file_written_bytes_total/ {print $2}' "$MNT/.metrics")
    calls_mark
    echo "one more line" >>"$R/it/big/log" || fail "append"
    assert_eq 0 "$(calls_since ReadFile)" "ReadFile calls for an append"
    assert_eq 0 "$(calls_since WriteFile)" "WriteFile calls for an append"
    assert_eq 1 "$(calls_since StreamExec)" "StreamExec calls for an append"
    it_figure "one line appended to a 40 MiB file: $(calls_since_all)"
    after=$(awk '/^cwsfs_file_written_bytes_total/ {print $2}' "$MNT/.metrics")
    assert_eq 14 "$((after - before))" "bytes sent for the appended line"
    assert_eq "41943054 one more line" "$(inside 'echo "$(stat -c %s /it/big/log) $(tail -n 1 /it/big/log)"')" "the log in the sandbox"
}

# chmod and touch of a file not yet sent are applied after the send; however many come,
# the last of each is what the sandbox's file gets (none is dropped unsaid).
case_many_attribute_changes_before_close() {
    must mkdir -p "$R/it/attrs"
    timeout "$(t 60)" "$IT_PY" - "$R/it/attrs/f" <<'PY' || fail "changes through the mount"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"data\n")
for mode, t in ((0o600, 1000000000), (0o640, 1100000000), (0o604, 1200000000), (0o751, 1300000000)):
    os.fchmod(fd, mode)
    os.utime(fd, (t, t))
os.close(fd)
PY
    assert_eq "751 1300000000" "$(inside 'stat -c "%a %Y" /it/attrs/f')" "mode and mtime after four of each"
}

# A big file (above the 32 MiB cap: sent by StreamExec) whose target the sandbox
# refuses fails its close at once with the sandbox's own words, not a minute later
# blaming an upload stall.
case_refused_big_write_fails_fast_with_the_reason() {
    must_fail "Read-only file system" dd if=/dev/zero of="$R/sys/cwsfs-big" bs=1M count=40 status=none
    assert_contains "$(rd "$FS/error")" "Read-only file system" "error after a refused big write"
    assert_eq "" "$(inside 'ls -a /sys | grep cwsfs || true')" "files left in /sys"
}

it_case case_refused_big_write_fails_fast_with_the_reason
it_case case_many_attribute_changes_before_close
it_case case_enospc_keeps_old_file
it_case case_concurrent_appenders_lose_nothing
it_case case_append_sends_only_new_bytes
it_case case_cut_replacement_never_half_written
it_done
