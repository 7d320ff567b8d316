#!/usr/bin/env bash
# Adoption: sandboxes outlive the mount; a new mount with the same tags lists them
# under the name they were made with; a mount with other tags does not.
. "$(dirname "$0")/lib.sh"
it_start

case_remount_with_same_tags_adopts() {
    local tag=$IT_TAG-a m1=$IT_WORK/m1 m2=$IT_WORK/m2 id
    it_mount "$m1" "tags=$tag"
    mksb keeper "$m1"
    ctl "$SB" start
    run_in "$SB" 'echo from-first-mount > /marker' >/dev/null || exit 1
    id=$(rd "$SB/id") || exit 1
    mksb lazy "$m1" # never started: nothing to adopt
    calls_mark
    it_unmount "$m1" || fail "unmount of the first mount"
    assert_eq 0 "$(calls_since DeleteSandbox)" "DeleteSandbox calls at unmount (sandboxes keep running)"
    it_mount "$m2" "tags=$tag"
    assert_contains "$(ls "$m2")" keeper "ls of the second mount"
    assert_not_contains "$(ls "$m2")" lazy "ls of the second mount (unstarted sandbox)"
    assert_file_eq "$m2/keeper/id" "$id"$'\n'
    assert_file_eq "$m2/keeper/status" $'running\n'
    # it is the same sandbox: its files are there, execs work
    assert_file_eq "$m2/keeper/root/marker" $'from-first-mount\n'
    ctl "$m2/keeper" 'exec cat /marker'
    assert_file_eq "$m2/keeper/stdout" $'from-first-mount\n'
    # spec changes are refused (it started long ago)
    ctl_fails "Device or resource busy" "$m2/keeper" "env A=B"
    # and rm -r stops it with one DeleteSandbox
    calls_mark
    must rm -r "$m2/keeper"
    assert_eq 1 "$(calls_since DeleteSandbox)" "DeleteSandbox for rm -r of an adopted sandbox"
    it_unmount "$m2" || fail "unmount of the second mount"
}

case_other_tags_do_not_adopt() {
    local tag=$IT_TAG-b m1=$IT_WORK/m3 m2=$IT_WORK/m4 m3=$IT_WORK/m5
    it_mount "$m1" "tags=$tag"
    mksb mine "$m1"
    ctl "$SB" start
    it_unmount "$m1" || fail "unmount"
    # other tags: not listed, not reachable by name
    it_mount "$m2" "tags=$IT_TAG-other"
    assert_not_contains "$(ls "$m2")" mine "ls of a mount with other tags"
    assert_not_exists "$m2/mine"
    it_unmount "$m2" || fail "unmount"
    # a superset of the tags: the sandbox must carry all of them
    it_mount "$m3" "tags=$tag:$IT_TAG-extra"
    assert_not_contains "$(ls "$m3")" mine "ls of a mount with more tags"
    it_unmount "$m3" || fail "unmount"
    # the same tags again: there it is
    it_mount "$m1" "tags=$tag"
    assert_contains "$(ls "$m1")" mine "ls with the same tags"
    must rm -r "$m1/mine"
    it_unmount "$m1" || fail "unmount"
}

case_sandbox_with_extra_tag_is_adopted() {
    local tag=$IT_TAG-c m1=$IT_WORK/m6
    it_mount "$m1" "tags=$tag"
    mksb tagged "$m1"
    ctl "$SB" "tag more-specific" start
    it_unmount "$m1" || fail "unmount"
    it_mount "$m1" "tags=$tag"
    assert_contains "$(ls "$m1")" tagged "ls: a sandbox with the session's tags and one more"
    assert_contains "$(rd "$m1/tagged/spec")" more-specific "adopted spec"
    must rm -r "$m1/tagged"
    it_unmount "$m1" || fail "unmount"
}

case_two_mounts_at_once_share_sandboxes() {
    local tag=$IT_TAG-d m1=$IT_WORK/m7 m2=$IT_WORK/m8
    it_mount "$m1" "tags=$tag"
    it_mount "$m2" "tags=$tag"
    mksb shared "$m1"
    ctl "$SB" start
    # an unknown name is not looked up remotely (mkdir costs no call); `ls` of the
    # second mount lists the session again and shows it
    assert_not_exists "$m2/shared"
    wait_for 5 sh -c 'ls "$1" >/dev/null && test -d "$1/shared"' _ "$m2"
    assert_eq "$(rd "$m1/shared/id")" "$(rd "$m2/shared/id")" "the same sandbox in both mounts"
    ctl "$m2/shared" 'exec echo via-second'
    assert_file_eq "$m2/shared/stdout" $'via-second\n'
    must rm -r "$m1/shared"
    it_unmount "$m1" || fail "unmount"
    it_unmount "$m2" || fail "unmount"
}

# A sandbox another client made (no name annotation) is listed under its id.
case_foreign_sandbox_listed_by_id() {
    local tag=$IT_TAG-e m=$IT_WORK/m9 id
    id=$(curl -s --max-time 10 -H 'content-type: application/json' \
        -d "{\"sandbox\":{\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"python:3.11\"}],\"primaryContainer\":\"main\",\"tags\":[\"$tag\"]}}}" \
        "$IT_URL/coreweave.sandbox.v1.SandboxService/CreateSandbox" | grep -o '"sandboxId":"[^"]*"' | cut -d'"' -f4)
    [ -n "$id" ] || fail "could not create a sandbox with curl"
    sleep 1 # let it reach RUNNING
    it_mount "$m" "tags=$tag"
    assert_contains "$(ls "$m")" "$id" "ls: a foreign sandbox under its id"
    assert_file_eq "$m/$id/id" "$id"$'\n'
    ctl "$m/$id" 'exec echo adopted-by-id'
    assert_file_eq "$m/$id/stdout" $'adopted-by-id\n'
    must rm -r "$m/$id"
    it_unmount "$m" || fail "unmount"
}

it_case case_remount_with_same_tags_adopts
it_case case_foreign_sandbox_listed_by_id
it_case case_other_tags_do_not_adopt
it_case case_sandbox_with_extra_tag_is_adopted
it_case case_two_mounts_at_once_share_sandboxes
it_done
