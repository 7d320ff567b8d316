#!/usr/bin/env bash
# Credentials as the official clients read them, against a backend that requires a
# key: CoreWeave (CWSANDBOX_BASE_URL + CWSANDBOX_API_KEY, or api_key_file=), W&B
# (WANDB_SANDBOX_BASE_URL + WANDB_API_KEY, or the ~/.netrc entry for api.wandb.ai), a
# missing or wrong key refused before mounting. The key never shows on a command line
# or in the log. All endpoints are this machine's backend.
. "$(dirname "$0")/lib.sh"
KEY="it-key-$$-$RANDOM-secret"
# the backend reads its key from a file only root can read (never from argv)
(umask 077 && printf '%s\n' "$KEY" >"$IT_WORK/backend.key")
it_init --api-key-file "$IT_WORK/backend.key"

# works MNT: a sandbox, an exec and its output through the mount; the key nowhere.
works() {
    local m=$1 pid=${IT_MOUNT_PID[$1]}
    mksb s "$m"
    ctl "$SB" 'exec echo authed'
    assert_file_eq "$SB/stdout" $'authed\n'
    must rm -r "$SB"
    assert_not_contains "$(tr '\0' ' ' <"/proc/$pid/cmdline")" "$KEY" "the daemon's command line"
    it_unmount "$m" || fail "unmount"
    assert_not_contains "$(cat "$IT_LAST_LOG")" "$KEY" "the daemon's log"
}

# refused MNT OPTS URL: cwsfs must exit (not mount) with a message, without the key.
refused() {
    it_mount_try "$@" && fail "mounted with $2 against a backend that needs a key"
    [ "$IT_MOUNT_RC" != timeout ] || fail "cwsfs neither mounted nor exited"
    local msg
    msg=$(cat "$IT_LAST_LOG")
    assert_ne "" "$msg" "message when refused"
    assert_not_contains "$msg" "$KEY" "message when refused"
    it_log "refused: $(tail -n 1 "$IT_LAST_LOG")"
}

case_no_key_is_refused_before_mounting() {
    refused "$IT_WORK/m-nokey" "" "$IT_URL"
    assert_match "$(cat "$IT_LAST_LOG")" '[Uu]nauthenticated|[Aa]uthenticat|[Pp]ermission|key' "message without a key"
}

case_api_key_file() {
    printf '%s\n' "$KEY" >"$IT_WORK/key"
    chmod 600 "$IT_WORK/key"
    it_mount "$IT_WORK/m-file" "api_key_file=$IT_WORK/key"
    works "$IT_WORK/m-file"
    # the wrong key: refused, and the key file's content is not echoed
    printf 'wrong-key-%s\n' "$RANDOM" >"$IT_WORK/badkey"
    refused "$IT_WORK/m-bad" "api_key_file=$IT_WORK/badkey" "$IT_URL"
    assert_not_contains "$(cat "$IT_LAST_LOG")" "$(cat "$IT_WORK/badkey")" "message with a wrong key"
    # a missing key file
    refused "$IT_WORK/m-missing" "api_key_file=$IT_WORK/no-such-file" "$IT_URL"
}

case_cwsandbox_environment() {
    export CWSANDBOX_BASE_URL=$IT_URL CWSANDBOX_API_KEY=$KEY
    it_mount "$IT_WORK/m-env" "" none
    works "$IT_WORK/m-env"
    # the environment's key with an explicit endpoint= works too
    it_mount "$IT_WORK/m-env2" "auth=cwsandbox" "$IT_URL"
    works "$IT_WORK/m-env2"
    export CWSANDBOX_API_KEY=wrong
    refused "$IT_WORK/m-env3" "" none
}

case_wandb_environment() {
    export WANDB_SANDBOX_BASE_URL=$IT_URL WANDB_API_KEY=$KEY WANDB_ENTITY=it-entity WANDB_PROJECT=it-project
    it_mount "$IT_WORK/m-wandb" "" none
    works "$IT_WORK/m-wandb"
    # auth=wandb without any key is an error
    unset WANDB_API_KEY
    refused "$IT_WORK/m-wandb2" "auth=wandb" "$IT_URL"
}

case_wandb_netrc() {
    local home=$IT_WORK/netrc-home
    mkdir -p "$home"
    printf 'machine example.invalid login x password nope\nmachine api.wandb.ai\n  login user\n  password %s\n' "$KEY" >"$home/.netrc"
    chmod 600 "$home/.netrc"
    export HOME=$home WANDB_SANDBOX_BASE_URL=$IT_URL
    it_mount "$IT_WORK/m-netrc" "" none
    works "$IT_WORK/m-netrc"
}

# The headers each flavour sends (a recording server on loopback; HTTP/1.1).
case_flavour_headers() {
    local d=$IT_WORK/rec h url
    mkdir -p "$d"
    "$IT_PY" "$IT_DIR/fakesrv.py" record "$d/addr" 2>"$d/log" &
    url=$(it_address "$d/addr" "recording server" "$d/log") || exit 1
    export CWSANDBOX_BASE_URL=$url CWSANDBOX_API_KEY=$KEY
    it_mount "$IT_WORK/m-rec1" "http1" none
    it_unmount "$IT_WORK/m-rec1" || fail "unmount"
    unset CWSANDBOX_BASE_URL CWSANDBOX_API_KEY
    h=$(head -n 1 "$d/addr.headers")
    assert_contains "$h" "\"authorization\": \"Bearer $KEY\"" "CoreWeave flavour headers"
    assert_not_contains "$h" "x-wandb-api-key" "CoreWeave flavour headers"
    : >"$d/addr.headers"
    export WANDB_SANDBOX_BASE_URL=$url WANDB_API_KEY=$KEY WANDB_ENTITY=it-entity WANDB_PROJECT=it-project
    it_mount "$IT_WORK/m-rec2" "http1" none
    it_unmount "$IT_WORK/m-rec2" || fail "unmount"
    h=$(head -n 1 "$d/addr.headers")
    assert_contains "$h" "\"x-wandb-api-key\": \"$KEY\"" "W&B flavour headers"
    assert_contains "$h" "\"x-entity-id\": \"it-entity\"" "W&B flavour headers"
    assert_contains "$h" "\"x-project-name\": \"it-project\"" "W&B flavour headers"
    assert_not_contains "$h" "Bearer" "W&B flavour headers"
}

it_case case_no_key_is_refused_before_mounting
it_case case_flavour_headers
it_case case_api_key_file
it_case case_cwsandbox_environment
it_case case_wandb_environment
it_case case_wandb_netrc
it_done
