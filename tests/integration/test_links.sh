#!/usr/bin/env bash
# Symbolic links planted inside a sandbox never lead the host out of it: absolute
# targets read back relative to the sandbox's root, climbing ones are clamped to it, so
# writes, reads and copies through them on the host reach the sandbox's file, never a
# host file (a canary in the test's work directory, named by its absolute path).
. "$(dirname "$0")/lib.sh"
it_start

mksb links
LS=$SB
ctl "$LS" start || exit 1
R=$LS/root
W=${IT_WORK#/} # the work directory as a path below "/"

inside() { run_in "$LS" "$1"; }

# A host file that must never change, and the same directory made inside the sandbox
# so that the links' targets exist there too (or can be created there).
canary() {
    printf 'host canary\n' >"$IT_WORK/$1"
    inside "mkdir -p '$IT_WORK' /it/$2" >/dev/null || exit 1
}
canary_intact() {
    assert_eq "host canary" "$(cat "$IT_WORK/$1")" "host file $IT_WORK/$1 after $2"
}

case_absolute_link_reads_relative() {
    inside "mkdir -p /it/rl/sub && ln -s /etc/passwd /it/rl/abs && ln -s / /it/rl/top && ln -s /it/rl /it/rl/sub/up && ln -s sub/x /it/rl/rel && ln -s ../rl/x /it/rl/relup && ln -s ../../../../../../../etc /it/rl/climb && ln -s /a/../../b/./c//d /it/rl/dots" >/dev/null || exit 1
    assert_eq ../../etc/passwd "$(readlink "$R/it/rl/abs")" "absolute target"
    assert_eq ../.. "$(readlink "$R/it/rl/top")" "target /"
    assert_eq .. "$(readlink "$R/it/rl/sub/up")" "target an ancestor"
    assert_eq sub/x "$(readlink "$R/it/rl/rel")" "relative target staying inside"
    assert_eq ../rl/x "$(readlink "$R/it/rl/relup")" "relative target climbing within the root"
    assert_eq ../../etc "$(readlink "$R/it/rl/climb")" "climbing relative target"
    assert_eq ../../b/c/d "$(readlink "$R/it/rl/dots")" "absolute target with dots"
    # what it leads to on the host is the sandbox's file, the same as inside
    assert_eq "$(inside 'cat /etc/passwd')" "$(rd "$R/it/rl/abs")" "reading through the link"
    # the size of a link is its target's length, as lstat(2) promises
    assert_eq 16 "$(stat -c %s "$R/it/rl/abs")" "st_size of the link"
}

case_write_through_absolute_link() {
    canary c1 abs
    inside "ln -s '$IT_WORK/c1' /it/abs/link && echo inside > '$IT_WORK/c1'" >/dev/null || exit 1
    timeout "$(t 20)" bash -c 'echo hi > "$1"' _ "$R/it/abs/link"
    canary_intact c1 "echo > link"
    assert_eq "../../$W/c1" "$(readlink "$R/it/abs/link")" "readlink"
    assert_eq hi "$(inside "cat '$IT_WORK/c1'")" "the sandbox's file after echo > link" || exit 1
    assert_eq hi "$(rd "$R/it/abs/link")" "cat link"
    printf 'copied\n' >"$IT_WORK/src"
    timeout "$(t 20)" cp "$IT_WORK/src" "$R/it/abs/link"
    canary_intact c1 "cp file link"
    assert_eq copied "$(inside "cat '$IT_WORK/c1'")" "the sandbox's file after cp" || exit 1
    timeout "$(t 20)" bash -c 'echo more >> "$1"' _ "$R/it/abs/link"
    canary_intact c1 "echo >> link"
}

case_write_through_climbing_link() {
    canary c2 climb
    local up=../../../../../../../../../../../../../../../..
    inside "ln -s '$up$IT_WORK/c2' /it/climb/link && echo inside > '$IT_WORK/c2'" >/dev/null || exit 1
    timeout "$(t 20)" bash -c 'echo hi > "$1"' _ "$R/it/climb/link"
    canary_intact c2 "echo > climbing link"
    assert_eq "../../$W/c2" "$(readlink "$R/it/climb/link")" "readlink of a climbing link"
    assert_eq hi "$(inside "cat '$IT_WORK/c2'")" "the sandbox's file" || exit 1
    # climbing through a link to "/" is clamped as well: top/.. is not the sandbox's parent
    inside "ln -s / /it/climb/top && ln -s 'top/$up$IT_WORK/c2' /it/climb/via" >/dev/null || exit 1
    timeout "$(t 20)" bash -c 'echo via > "$1"' _ "$R/it/climb/via"
    canary_intact c2 "echo > a link climbing through a link to /"
    assert_eq via "$(inside "cat '$IT_WORK/c2'")" "the sandbox's file, through top/" || exit 1
}

# O_CREAT through a dangling link creates the sandbox's file, never a host one.
case_create_through_dangling_link() {
    canary c3 dangling
    rm -f "$IT_WORK/new1" "$IT_WORK/new2"
    inside "ln -s '$IT_WORK/new1' /it/dangling/abs && ln -s '../../../../../../../..$IT_WORK/new2' /it/dangling/climb" >/dev/null || exit 1
    timeout "$(t 20)" bash -c 'echo one > "$1"' _ "$R/it/dangling/abs"
    # (cp refuses to write through a dangling link by itself; a shell does not)
    timeout "$(t 20)" bash -c 'cat "$1" > "$2"' _ "$IT_WORK/c3" "$R/it/dangling/climb"
    assert_not_exists "$IT_WORK/new1"
    assert_not_exists "$IT_WORK/new2"
    assert_eq one "$(inside "cat '$IT_WORK/new1'")" "created through the absolute link" || exit 1
    assert_eq "host canary" "$(inside "cat '$IT_WORK/new2'")" "created through the climbing link" || exit 1
}

it_case case_absolute_link_reads_relative
it_case case_write_through_absolute_link
it_case case_write_through_climbing_link
it_case case_create_through_dangling_link
it_done
