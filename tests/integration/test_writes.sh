#!/usr/bin/env bash
# Writes that must not lose or damage data: a write that fails locally (the spool is
# full) fails close and fsync and leaves the sandbox's file as it was.
. "$(dirname "$0")/lib.sh"
# The failed write is logged, with where its data was kept.
# shellcheck disable=SC2034 # read by lib.sh
IT_LOG_ALLOW='local spool|was not saved in the sandbox|never sent to the sandbox'
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

it_case case_enospc_keeps_old_file
it_done
