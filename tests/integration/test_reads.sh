#!/usr/bin/env bash
# Big sandbox files read through the mount are fetched as they are read, not copied
# whole at open: `head` of a huge file costs what it reads, the spool keeps a bounded
# window, seeks read the right bytes, and a file that vanishes mid-read fails the read
# instead of ending it early.
. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034 # read by lib.sh
IT_LOG_ALLOW='read /it/'
it_init
SP=$IT_WORK/spool
mkdir -p "$SP"
MNT=$IT_WORK/mnt
M=$MNT
it_mount "$M" "spool=$SP,window=4"
mksb reads
S=$SB
ctl "$S" start || exit 1
R=$S/root
inside() { run_in "$S" "$1"; }

fetched() { # the mount's count of bytes fetched from sandbox files
    awk '$1 == "cwsfs_file_read_bytes_total" { print $2 }' "$M/.metrics"
}
spool_kib() { du -sk "$SP" | cut -f1; }

# 3 GB, sparse in the sandbox: fetching it whole would take minutes and 3 GB of disk.
case_head_of_a_huge_file_reads_little() {
    local before got after
    inside 'mkdir -p /it && printf "first line\n" > /it/huge && truncate -s 3G /it/huge' >/dev/null
    before=$(fetched)
    got=$(timeout "$(t 60)" head -c 10 "$R/it/huge")
    assert_eq "first line" "$got" "head -c 10 of a 3 GB file"
    after=$(fetched)
    it_log "head -c 10 of 3 GB fetched $((after - before)) bytes"
    assert_le $((after - before)) $((8 << 20)) "bytes fetched for head -c 10"
    # the open does not wait for the file either: a read of the middle is a seek
    got=$(timeout "$(t 60)" "$IT_PY" -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.lseek(fd, 2 << 30, 0)
print(len(os.read(fd, 4096)), os.read(fd, 4096).count(0))' "$R/it/huge")
    assert_eq "4096 4096" "$got" "a read in the middle of the 3 GB file"
    assert_le $(($(fetched) - before)) $((24 << 20)) "bytes fetched for head and one seek"
}

# A slow reader of 64 MiB: the spool never holds more than about two windows (4 MiB
# each here), and every byte arrives in order.
case_sequential_read_is_whole_and_bounded() {
    local want got
    inside 'head -c 64M /dev/urandom > /it/rand' >/dev/null
    want=$(inside 'md5sum < /it/rand' | cut -d' ' -f1)
    got=$(timeout "$(t 120)" "$IT_PY" - "$R/it/rand" "$SP" <<'PY'
import hashlib, os, subprocess, sys, time
h = hashlib.md5()
peak = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
        du = int(subprocess.run(["du", "-sk", sys.argv[2]], capture_output=True, text=True).stdout.split()[0])
        peak = max(peak, du)
        time.sleep(0.01)
print(h.hexdigest(), peak)
PY
    )
    it_log "64 MiB read slowly: md5 and spool peak (KiB): $got"
    assert_eq "$want" "${got% *}" "md5 of a 64 MiB file read through the mount"
    assert_le "${got#* }" $((12 << 10)) "spool peak in KiB while reading 64 MiB with window=4"
    assert_le "$(spool_kib)" 1024 "spool after the file was closed"
}

# Reads at offsets out of order get the bytes at those offsets.
case_seeks_read_the_right_bytes() {
    local off want got
    for off in 50000000 1000 60000000 33554431 0; do
        want=$(inside "dd if=/it/rand bs=1 skip=$off count=100 status=none | md5sum" | cut -d' ' -f1)
        got=$(timeout "$(t 60)" "$IT_PY" -c '
import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(hashlib.md5(os.pread(fd, 100, int(sys.argv[2]))).hexdigest())' "$R/it/rand" "$off")
        assert_eq "$want" "$got" "100 bytes at offset $off"
    done
}

# The file is removed in the sandbox after the open: the next read that needs new
# bytes fails (EIO or ENOENT), it does not end the file early.
case_file_gone_mid_read_fails_the_read() {
    local got
    inside 'head -c 48M /dev/zero > /it/gone' >/dev/null
    got=$(timeout "$(t 60)" "$IT_PY" - "$R/it/gone" "$S/ctl" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.read(fd, 1 << 20)
with open(sys.argv[2], "w") as c:
    c.write("exec rm -f /it/gone\n")
import time; time.sleep(1)
total = 1 << 20
try:
    while True:
        b = os.pread(fd, 1 << 20, 40 << 20)
        total += len(b)
        if not b:
            break
        if total > (64 << 20):
            break
    print("read", total)
except OSError as e:
    print("error", errno.errorcode[e.errno])
PY
    )
    it_log "read after the file was removed: $got"
    case $got in
    "error EIO" | "error ENOENT") ;;
    *) fail "a read after the file was removed gave '$got', not an error" ;;
    esac
}

# A 4 MiB tmpfs spool: with window=1 a 48 MiB file reads whole through it; with
# window=8 a chunk does not fit, and the read fails with ENOSPC ("spool full" in
# `error`) instead of ending early.
case_small_spool() {
    local sp=$IT_WORK/tiny m2=$IT_WORK/m2 m3=$IT_WORK/m3 want got err
    mkdir -p "$sp"
    must mount -t tmpfs -o size=4m tmpfs "$sp"
    inside 'mkdir -p /it && head -c 48M /dev/urandom > /it/mid' >/dev/null
    want=$(inside 'md5sum < /it/mid' | cut -d' ' -f1)
    it_mount "$m2" "spool=$sp,window=1"
    got=$(timeout "$(t 120)" md5sum <"$m2/reads/root/it/mid" | cut -d' ' -f1)
    assert_eq "$want" "$got" "md5 of 48 MiB read through a 4 MiB spool (window=1)"
    it_unmount "$m2" || fail "unmount $m2"
    it_mount "$m3" "spool=$sp,window=8"
    must_fail "No space left on device" bash -c 'cat "$1" >/dev/null' _ "$m3/reads/root/it/mid"
    err=$(rd "$m3/reads/error") || exit 1
    it_log "error after reading through a full spool: $err"
    assert_contains "$err" "spool full" "error after reading through a full spool"
    # opened to change it, the file is fetched whole at open: the open fails the same way
    must_fail "No space left on device" bash -c ': 1<>"$1"' _ "$m3/reads/root/it/mid"
    err=$(rd "$m3/reads/error") || exit 1
    assert_contains "$err" "spool full" "error after an open for update through a full spool"
    IT_LOG_ALLOW='spool full' it_unmount "$m3" || fail "unmount $m3"
    must umount "$sp"
}

it_case case_head_of_a_huge_file_reads_little
it_case case_sequential_read_is_whole_and_bounded
it_case case_seeks_read_the_right_bytes
it_case case_file_gone_mid_read_fails_the_read
it_case case_small_spool
it_done
