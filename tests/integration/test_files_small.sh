#!/usr/bin/env bash
# Files inside a sandbox through root/: cat, cp in and out (small and 1 MiB, with the
# call counts), editing patterns (>> append, sed -i, save-by-rename, mv of a directory,
# truncate), mkdir/rmdir/unlink/chmod, close-to-open consistency with commands, odd
# names (harmless to shells), and ENOTSUP for hard links, xattrs and locks.
# (The large files and the 1000-entry listing are in test_files.sh.)
. "$(dirname "$0")/lib.sh"
# The refused write to /proc/version is logged (as ERROR) with where its data was kept.
# shellcheck disable=SC2034 # read by lib.sh
IT_LOG_ALLOW='/proc/version was not saved in the sandbox'
it_start

# One running sandbox for all cases; each case works in its own directory /it/CASE.
mksb files
FS=$SB
ctl "$FS" start || exit 1
R=$FS/root

# inside CMD: run CMD in the sandbox, print its stdout (fails the case on non-zero)
inside() { run_in "$FS" "$1"; }

case_cat_os_release_via_root_link() {
    local via inside_text
    via=$(rd "$R/etc/os-release") || exit 1
    inside_text=$(inside 'cat /etc/os-release') || exit 1
    assert_eq "$inside_text" "$via" "/etc/os-release through root/"
    assert_contains "$via" "NAME=" "/etc/os-release"
    # through the .root path as well
    assert_eq "$via" "$(rd "$MNT/.root/files/etc/os-release")" ".root/files/etc/os-release"
    # ls of / shows the usual directories
    assert_contains "$(ls "$R/")" etc "ls root/"
    must_fail "No such file or directory" cat "$R/etc/no-such-file-here"
}

# Common tools on whole trees: cp -r, cp -a (modes, times), tar x; the sandbox sees the
# same bytes; symlinks, chown and utimes work.
case_copy_trees_cp_r_cp_a_tar() {
    local t=$IT_WORK/tree i want
    mkdir -p "$t/sub/deeper"
    for i in $(seq 1 50); do echo "file $i" >"$t/f$i"; done
    echo deep >"$t/sub/deeper/d"
    chmod 750 "$t/f7"
    ln -s f1 "$t/link"
    touch -d '2001-02-03 04:05:06' "$t/f9"
    want=$(cd "$t" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum | cut -d' ' -f1)
    must mkdir -p "$R/it/trees"
    calls_mark
    must cp -r "$t" "$R/it/trees/r"
    it_figure "cp -r of a tree of 51 files and 3 directories in: $(calls_since_all)"
    calls_mark
    must cp -a "$t" "$R/it/trees/a"
    it_figure "cp -a of the same tree in: $(calls_since_all)"
    tar -C "$IT_WORK" -cf "$IT_WORK/tree.tar" tree
    calls_mark
    must tar -C "$R/it/trees" -xf "$IT_WORK/tree.tar"
    it_figure "tar x of the same tree in: $(calls_since_all)"
    local d
    for d in r a tree; do
        assert_eq "$want" "$(inside "cd /it/trees/$d && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum | cut -d' ' -f1")" "tree $d inside the sandbox" || exit 1
    done
    assert_eq 750 "$(inside 'stat -c %a /it/trees/a/f7')" "mode kept by cp -a" || exit 1
    assert_eq f1 "$(inside 'readlink /it/trees/a/link')" "symlink made by cp -a" || exit 1
    assert_eq "2001-02-03 04:05:06" "$(inside 'date -u -r /it/trees/a/f9 "+%Y-%m-%d %H:%M:%S"')" "mtime kept by cp -a" || exit 1
    assert_eq "2001-02-03 04:05:06" "$(TZ=UTC date -r "$R/it/trees/a/f9" "+%Y-%m-%d %H:%M:%S")" "mtime kept by cp -a, seen through the mount" || exit 1
    assert_eq 750 "$(inside 'stat -c %a /it/trees/tree/f7')" "mode set by tar" || exit 1
    # and back out: cp -r of the tree from the sandbox equals the original
    must cp -r "$R/it/trees/a" "$IT_WORK/back"
    assert_eq "$want" "$(cd "$IT_WORK/back" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum | cut -d' ' -f1)" "tree copied back out"
    # chown and touch act in the sandbox
    must chown 1:1 "$R/it/trees/r/f1"
    assert_eq "1:1" "$(inside 'stat -c %u:%g /it/trees/r/f1')" "owner after chown" || exit 1
    must touch -d '2011-11-11 11:11:11' "$R/it/trees/r/f2"
    assert_eq "2011-11-11" "$(inside 'date -u -r /it/trees/r/f2 +%Y-%m-%d')" "mtime after touch -d" || exit 1
    must rm -r "$R/it/trees"
}

case_copy_small_in_and_out() {
    must mkdir -p "$R/it/small"
    printf 'hello\n' >"$IT_WORK/hello.txt"
    must cp "$IT_WORK/hello.txt" "$R/it/small/"
    assert_eq hello "$(inside 'cat /it/small/hello.txt')" "content inside" || exit 1
    assert_file_eq "$R/it/small/hello.txt" $'hello\n'
    assert_eq 6 "$(stat -c %s "$R/it/small/hello.txt")" "st_size"
    must cp "$R/it/small/hello.txt" "$IT_WORK/hello.back"
    must cmp "$IT_WORK/hello.txt" "$IT_WORK/hello.back"
    # an empty file and a binary one
    : >"$IT_WORK/empty"
    must cp "$IT_WORK/empty" "$R/it/small/empty"
    assert_eq 0 "$(stat -c %s "$R/it/small/empty")" "size of an empty file"
    assert_eq "0" "$(inside 'stat -c %s /it/small/empty')" "size inside" || exit 1
    printf '\0\1\2\377\n\0' >"$IT_WORK/bin"
    must cp "$IT_WORK/bin" "$R/it/small/bin"
    must cp "$R/it/small/bin" "$IT_WORK/bin.back"
    must cmp "$IT_WORK/bin" "$IT_WORK/bin.back"
    # echo > creates, a second > replaces
    must bash -c 'echo first > "$1"; echo second > "$1"' _ "$R/it/small/redir"
    assert_eq second "$(inside 'cat /it/small/redir')" "after two >" || exit 1
}

case_copy_1mib_call_counts() {
    must mkdir -p "$R/it/mib"
    head -c 1048576 /dev/urandom >"$IT_WORK/1m.bin"
    local in out
    calls_mark
    must cp "$IT_WORK/1m.bin" "$R/it/mib/1m.bin"
    in=$(calls_since_all)
    it_figure "cp of a 1 MiB file in: $in"
    assert_eq 1 "$(calls_since WriteFile)" "WriteFile calls for a 1 MiB cp in"
    calls_mark
    must cp "$R/it/mib/1m.bin" "$IT_WORK/1m.back"
    out=$(calls_since_all)
    it_figure "cp of a 1 MiB file out: $out"
    must cmp "$IT_WORK/1m.bin" "$IT_WORK/1m.back"
    assert_eq "$(md5sum <"$IT_WORK/1m.bin" | cut -d' ' -f1)" "$(inside 'md5sum < /it/mib/1m.bin | cut -d" " -f1')" "md5 inside" || exit 1
    # a small constant number of calls each way
    local n
    n=$(echo "$in" | tr ' ' '\n' | cut -d= -f2 | paste -sd+ | bc)
    assert_le "$n" 5 "calls for a 1 MiB cp in ($in)"
    n=$(echo "$out" | tr ' ' '\n' | cut -d= -f2 | paste -sd+ | bc)
    assert_le "$n" 4 "calls for a 1 MiB cp out ($out)"
}

case_append() {
    must mkdir -p "$R/it/append"
    local f=$R/it/append/log.txt
    must bash -c 'echo one > "$1"; echo two >> "$1"; printf three >> "$1"' _ "$f"
    assert_file_eq "$f" $'one\ntwo\nthree'
    assert_eq $'one\ntwo\nthree' "$(inside 'cat /it/append/log.txt')" "appended inside" || exit 1
    # append to a file a command made
    inside 'printf "cmd\n" > /it/append/cmd.txt' >/dev/null || exit 1
    must bash -c 'echo mount >> "$1"' _ "$R/it/append/cmd.txt"
    assert_eq $'cmd\nmount' "$(inside 'cat /it/append/cmd.txt')" "append to a command's file" || exit 1
}

case_sed_in_place() {
    must mkdir -p "$R/it/sed"
    local f=$R/it/sed/conf
    printf 'name=old\nport=80\n' >"$IT_WORK/conf"
    must cp "$IT_WORK/conf" "$f"
    must sed -i 's/old/new/; s/80/8080/' "$f"
    assert_file_eq "$f" $'name=new\nport=8080\n'
    assert_eq $'name=new\nport=8080' "$(inside 'cat /it/sed/conf')" "sed -i result inside" || exit 1
    # no temporary file left behind
    assert_eq conf "$(ls -A "$R/it/sed")" "directory after sed -i"
}

case_save_by_rename() {
    must mkdir -p "$R/it/save"
    local d=$R/it/save
    must bash -c 'echo v1 > "$1/doc.txt"' _ "$d"
    # an editor's save: write a temporary file, fsync, rename it over the original
    must bash -c 'echo v2 > "$1/.doc.txt.swp" && sync "$1/.doc.txt.swp" && mv -f "$1/.doc.txt.swp" "$1/doc.txt"' _ "$d"
    assert_file_eq "$d/doc.txt" $'v2\n'
    assert_eq doc.txt "$(ls -A "$d")" "directory after save-by-rename"
    assert_eq v2 "$(inside 'cat /it/save/doc.txt; test ! -e /it/save/.doc.txt.swp')" "inside after save-by-rename" || exit 1
    # rename to a new name, and across directories
    must mkdir "$d/sub"
    must mv "$d/doc.txt" "$d/sub/moved.txt"
    assert_not_exists "$d/doc.txt"
    assert_file_eq "$d/sub/moved.txt" $'v2\n'
    assert_eq v2 "$(inside 'cat /it/save/sub/moved.txt')" "moved inside" || exit 1
}

case_mv_directory() {
    must mkdir -p "$R/it/mvdir/a/deep"
    must bash -c 'echo x > "$1/it/mvdir/a/deep/f"; echo y > "$1/it/mvdir/a/g"' _ "$R"
    must mv "$R/it/mvdir/a" "$R/it/mvdir/b"
    assert_not_exists "$R/it/mvdir/a"
    assert_file_eq "$R/it/mvdir/b/deep/f" $'x\n'
    assert_file_eq "$R/it/mvdir/b/g" $'y\n'
    assert_eq "b" "$(inside 'ls /it/mvdir')" "inside after mv of a directory" || exit 1
    assert_eq "x" "$(inside 'cat /it/mvdir/b/deep/f')" "file moved with its directory" || exit 1
}

case_truncate() {
    must mkdir -p "$R/it/trunc"
    local f=$R/it/trunc/t
    must bash -c 'printf 0123456789 > "$1"' _ "$f"
    must truncate -s 4 "$f"
    assert_file_eq "$f" 0123
    assert_eq 4 "$(stat -c %s "$f")" "size after truncate -s 4"
    assert_eq 0123 "$(inside 'cat /it/trunc/t')" "inside after truncate" || exit 1
    must truncate -s 6 "$f"
    assert_eq "$(printf '0123\0\0' | od -An -tx1)" "$(rd "$f" | od -An -tx1)" "truncate -s 6 extends with zeros"
    must truncate -s 0 "$f"
    assert_file_eq "$f" ""
    assert_eq 0 "$(inside 'stat -c %s /it/trunc/t')" "size inside after truncate -s 0" || exit 1
    # open with O_TRUNC over existing content
    must bash -c 'printf abc > "$1"' _ "$f"
    assert_eq abc "$(inside 'cat /it/trunc/t')" "after > over old content" || exit 1
}

case_mkdir_rmdir_unlink_chmod() {
    local d=$R/it/ops
    must mkdir -p "$d/x/y"
    assert_eq "y" "$(inside 'ls /it/ops/x')" "mkdir -p inside" || exit 1
    must_fail "File exists" mkdir "$d/x"
    must bash -c 'echo data > "$1/x/file"' _ "$d"
    must_fail "Directory not empty" rmdir "$d/x"
    must rmdir "$d/x/y"
    assert_not_exists "$d/x/y"
    must chmod 640 "$d/x/file"
    assert_eq 640 "$(stat -c %a "$d/x/file")" "mode after chmod"
    assert_eq 640 "$(inside 'stat -c %a /it/ops/x/file')" "mode inside after chmod" || exit 1
    must chmod 755 "$d/x/file"
    assert_eq 755 "$(inside 'stat -c %a /it/ops/x/file')" "mode inside after chmod 755" || exit 1
    assert_eq "$(stat -c %a "$d/x/file")" 755 "mode after chmod 755"
    must rm "$d/x/file"
    assert_not_exists "$d/x/file"
    assert_eq gone "$(inside 'test -e /it/ops/x/file || echo gone')" "unlinked inside" || exit 1
    must_fail "No such file or directory" rm "$d/x/file"
    must rmdir "$d/x"
    must rm -r "$d"
    assert_eq gone "$(inside 'test -e /it/ops || echo gone')" "rm -r inside root" || exit 1
    # a file's attributes: ls -l shows size and mode
    must mkdir -p "$R/it/attrs"
    must bash -c 'printf 12345 > "$1"; chmod 600 "$1"' _ "$R/it/attrs/f"
    assert_match "$(ls -l "$R/it/attrs/f")" '^-rw------- .* 5 ' "ls -l of a file"
    assert_match "$(ls -ld "$R/it/attrs")" '^d' "ls -ld of a directory"
}

case_close_to_open_with_commands() {
    must mkdir -p "$R/it/c2o"
    local f=$R/it/c2o/f
    must bash -c 'echo mount-wrote > "$1"' _ "$f"
    # what a closed write put there, the next open reads (inside and out)
    assert_eq mount-wrote "$(inside 'cat /it/c2o/f')" "command sees the mount's write" || exit 1
    assert_file_eq "$f" $'mount-wrote\n'
    # a command changes it: the next open sees the change (no waiting)
    inside 'echo command-wrote > /it/c2o/f' >/dev/null || exit 1
    assert_file_eq "$f" $'command-wrote\n'
    assert_eq 14 "$(stat -c %s "$f")" "size after a command changed the file (may lag 1 s)" ||
        { sleep 1.2; assert_eq 14 "$(stat -c %s "$f")" "size 1 s after a command changed the file"; }
    # a file a command creates is there at the next open, even after the directory was listed
    ls "$R/it/c2o" >/dev/null
    inside 'echo fresh > /it/c2o/new' >/dev/null || exit 1
    assert_file_eq "$R/it/c2o/new" $'fresh\n'
    # a file a command removes is gone at the next open
    inside 'rm /it/c2o/new' >/dev/null || exit 1
    must_fail "No such file or directory" cat "$R/it/c2o/new"
    # a directory a command makes can be entered
    inside 'mkdir -p /it/c2o/dir && echo in > /it/c2o/dir/g' >/dev/null || exit 1
    assert_file_eq "$R/it/c2o/dir/g" $'in\n'
}

# Shell payloads as names. A name cannot hold '/', so the payloads that need one are
# also made as paths ("$(touch /tmp/pwned)" = directory "$(touch " / "tmp" / "pwned)").
PWN='$(cd;cd ..;cd ..;cd ..;cd tmp;touch pwned)'
case_odd_names_are_harmless() {
    local d=$R/it/odd name names i got
    must mkdir -p "$d"
    rm -f /tmp/pwned
    names=("with space" $'new\nline' "quote'single" 'quote"double' "ünïcödé-日本語" \
        "$PWN" '`cd;cd ..;cd ..;cd tmp;touch pwned`' '; rm -rf *' '-dash' '*' 'back\slash' \
        '|pipe&amp>' '  lead and trail  ' '%s%n%d' $'tab\there' '-rf')
    i=0
    for name in "${names[@]}"; do
        i=$((i + 1))
        must bash -c 'printf "%s" "$2" > "$1"' _ "$d/$name" "content-$i"
        assert_file_eq "$d/$name" "content-$i"
    done
    # the listing shows exactly these names
    got=$(cd "$d" && printf '%s\0' * | sort -z | od -An -c)
    assert_eq "$(printf '%s\0' "${names[@]}" | sort -z | od -An -c)" "$got" "names listed"
    # a command inside sees the same bytes (md5 of the NUL-separated sorted names)
    assert_eq "$(printf '%s\0' "${names[@]}" | LC_ALL=C sort -z | md5sum | cut -d' ' -f1)" \
        "$(inside 'cd /it/odd && find . -mindepth 1 -maxdepth 1 -printf "%P\0" | LC_ALL=C sort -z | md5sum | cut -d" " -f1')" \
        "names inside the sandbox" || exit 1
    # rename, chmod, ls -l, mkdir, rmdir, rm with odd names
    i=0
    for name in "${names[@]}"; do
        i=$((i + 1))
        must mv -- "$d/$name" "$d/$name.renamed"
        must chmod 600 -- "$d/$name.renamed"
        ls -l -- "$d/$name.renamed" >/dev/null || fail "ls -l of $(_it_show "$name.renamed")"
        assert_file_eq "$d/$name.renamed" "content-$i"
        must mkdir -- "$d/dir $name"
        must rmdir -- "$d/dir $name"
        must rm -- "$d/$name.renamed"
    done
    assert_eq "" "$(ls -A "$d")" "directory after removing the odd names"
    # the payloads with a slash, as paths
    must mkdir -p "$d/\$(touch /tmp" "$d/; rm -rf /"
    must bash -c 'echo a > "$1/\$(touch /tmp/pwned)"; echo b > "$1/; rm -rf /x"' _ "$d"
    assert_file_eq "$d/\$(touch /tmp/pwned)" $'a\n'
    assert_eq b "$(inside 'cat "/it/odd/; rm -rf /x"')" "file under a directory named \"; rm -rf \"" || exit 1
    must rm -r "$d/\$(touch " "$d/; rm -rf "
    # names a command made, seen through the mount
    inside 'cd /it/odd && touch -- "a b" "$(printf "n\nl")" "\$(touch pwned)" "; rm -rf *" "-rf"' >/dev/null || exit 1
    assert_exists "$d/a b"
    assert_exists "$d/\$(touch pwned)"
    assert_exists "$d/; rm -rf *"
    assert_exists "$d/-rf"
    assert_exists "$d/n"$'\n'"l"
    must rm -r -- "$d"
    # nothing ran: no pwned file here nor in the sandbox, and the sandbox's / is intact
    assert_not_exists /tmp/pwned
    assert_not_exists "$IT_WORK/pwned"
    assert_eq "absent" "$(inside 'test -e /tmp/pwned || test -e /pwned || test -e /it/pwned && echo present || echo absent')" "pwned in the sandbox" || exit 1
    assert_eq "ok" "$(inside 'test -f /etc/os-release && test -d /usr/bin && test -d /it && echo ok')" "sandbox root intact" || exit 1
}

case_unsupported_fail_enotsup() {
    must mkdir -p "$R/it/nosup"
    local f=$R/it/nosup/f r
    must bash -c 'echo x > "$1"' _ "$f"
    r=$(fsop link "$f" "$R/it/nosup/hard")
    assert_contains "$r" "Operation not supported" "link(2)"
    must_fail "Operation not supported" ln "$f" "$R/it/nosup/hard2"
    r=$(fsop setxattr "$f")
    assert_contains "$r" "Operation not supported" "setxattr(2)"
    r=$(fsop flock "$f")
    assert_contains "$r" "Operation not supported" "flock(2)"
    r=$(fsop lockf "$f")
    assert_contains "$r" "Operation not supported" "fcntl lock"
    assert_not_exists "$R/it/nosup/hard"
    assert_eq "f" "$(inside 'ls /it/nosup')" "nothing made by the refused calls" || exit 1
}

case_errors_inside_root() {
    must mkdir -p "$R/it/err"
    must_fail "No such file or directory" cat "$R/it/err/missing"
    must_fail "No such file or directory" ls "$R/it/err/missing-dir"
    must_fail "Is a directory" bash -c 'echo x > "$1"' _ "$R/it/err"
    must_fail "Not a directory" bash -c 'echo x > "$1/f"; cat "$1/f/g"' _ "$R/it/err"
    # a write the sandbox refuses (read-only /proc): close(2) returns the error, so cp
    # (which checks close) fails, and `error` says why
    printf 'x-data-%s\n' "$RANDOM" >"$IT_WORK/x"
    must_fail "cp" cp "$IT_WORK/x" "$R/proc/version"
    local err kept
    err=$(rd "$FS/error") || exit 1
    assert_contains "$err" "/proc/version" "error after a refused write"
    assert_contains "$err" "WriteFile: permission_denied" "the refused call and the service's code in error"
    it_log "error after a refused write: $err"
    # nothing dropped silently: the data stays in the local spool, and we are told where
    kept=$( (printf '%s\n' "$err"; cat "$IT_LAST_LOG") | grep -o 'kept in [^ ;,]*' | head -n 1 | cut -c9-)
    [ -n "$kept" ] || fail "neither error nor the log says where the unsaved data is kept"
    must cmp "$IT_WORK/x" "$kept"
    # dd with fsync: the error comes at fsync (or close) too
    must_fail "dd" dd if="$IT_WORK/x" of="$R/proc/version" conv=fsync,notrunc status=none
}

# An editor writes, fsyncs and closes: the data goes once (fsync sends it, the close
# has nothing new to send).
case_fsync_sends_once() {
    must mkdir -p "$R/it/fsync"
    head -c 100000 /dev/urandom >"$IT_WORK/f100k"
    calls_mark
    must "$IT_PY" "$IT_DIR/fsop.py" savefsync "$R/it/fsync/f" <"$IT_WORK/f100k"
    it_log "open, write, fsync, close of 100 kB: $(calls_since_all)"
    assert_eq 1 "$(calls_since WriteFile)" "WriteFile calls for a write + fsync + close"
    assert_eq "$(md5sum <"$IT_WORK/f100k" | cut -d' ' -f1)" "$(inside 'md5sum < /it/fsync/f | cut -d" " -f1')" "content after fsync" || exit 1
    # dd closes a dup of the new file before writing (the kernel flushes at every
    # close), so the empty file is made first: at most one more WriteFile
    calls_mark
    must dd if="$IT_WORK/f100k" of="$R/it/fsync/g" bs=64k conv=fsync status=none
    it_log "dd conv=fsync of 100 kB: $(calls_since_all)"
    assert_le "$(calls_since WriteFile)" 2 "WriteFile calls for dd conv=fsync"
    assert_eq "$(md5sum <"$IT_WORK/f100k" | cut -d' ' -f1)" "$(inside 'md5sum < /it/fsync/g | cut -d" " -f1')" "content after dd" || exit 1
}

# The kernel keeps no size of a regular file: a file a command grew right after a stat
# reads whole at once (not cut at the size the stat saw).
case_read_after_growth_within_a_second() {
    must mkdir -p "$R/it/grow"
    inside 'printf abc > /it/grow/f' >/dev/null || exit 1
    assert_eq 3 "$(stat -c %s "$R/it/grow/f")" "size before"
    inside 'printf abcdefgh > /it/grow/f' >/dev/null || exit 1
    assert_eq abcdefgh "$(rd "$R/it/grow/f")" "content right after the command"
    inside 'printf 12 >> /it/grow/f' >/dev/null || exit 1
    assert_eq abcdefgh12 "$(rd "$R/it/grow/f")" "content after an append"
}

# Names that are not UTF-8 cannot travel to the service (paths and argv are strings):
# making, reading or removing one fails with EILSEQ, and nothing else is run instead.
case_names_not_utf8_fail_eilseq() {
    must mkdir -p "$R/it/enc"
    local bad
    bad=$R/it/enc/$(printf 'caf\xe9')
    must_fail "Invalid or incomplete multibyte" bash -c 'echo x > "$1"' _ "$bad"
    must_fail "Invalid or incomplete multibyte" mkdir "$bad"
    # one made inside by a command: listed, but not readable or removable through here
    inside "printf y > /it/enc/\$(printf 'caf\\351')" >/dev/null || exit 1
    assert_eq 1 "$(find "$R/it/enc" -mindepth 1 | wc -l)" "entries listed"
    must_fail "Invalid or incomplete multibyte" cat "$bad"
    # (not rm -f: coreutils counts EILSEQ as "no such file" there)
    must_fail "Invalid or incomplete multibyte" rm "$bad"
    assert_eq 1 "$(inside 'ls /it/enc | wc -l')" "the file is still there" || exit 1
}

case_rename_is_one_command() {
    must mkdir -p "$R/it/rename"
    must bash -c 'echo r > "$1/it/rename/f"' _ "$R"
    ls -l "$R/it/rename" >/dev/null
    # rename: one mv in the sandbox, whatever the names
    calls_mark
    must mv "$R/it/rename/f" "$R/it/rename/g h"
    it_log "mv: $(calls_since_all)"
    # the mv, and at most one listing (the lookup of the new name)
    assert_le "$(calls_since Exec)" 2 "Exec calls for one rename"
    assert_eq 0 "$(calls_since WriteFile)" "WriteFile calls for a rename"
    assert_eq "g h" "$(inside 'ls /it/rename')" "after the rename" || exit 1
}

it_case case_cat_os_release_via_root_link
it_case case_copy_trees_cp_r_cp_a_tar
it_case case_copy_small_in_and_out
it_case case_copy_1mib_call_counts
it_case case_append
it_case case_sed_in_place
it_case case_save_by_rename
it_case case_mv_directory
it_case case_truncate
it_case case_mkdir_rmdir_unlink_chmod
it_case case_close_to_open_with_commands
it_case case_odd_names_are_harmless
it_case case_unsupported_fail_enotsup
it_case case_errors_inside_root
it_case case_fsync_sends_once
it_case case_rename_is_one_command
it_case case_read_after_growth_within_a_second
it_case case_names_not_utf8_fail_eilseq
it_done
