#!/usr/bin/env bash
# The whole test run, as CI does it on a fresh Debian 12 machine: install and build
# (tests/setup.sh), unit tests, the local backend's own tests, the integration suite
# against a real mount, then again under AddressSanitizer+UBSan, and the unit tests
# and a smoke run of the mount under valgrind.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
step() { printf '\n==== %s\n' "$*"; }

step "setup and build (-Werror)"
# The linters are this script's own commands; tests/check-commands.py counts them in.
export SETUP_EXTRA_PACKAGES="clang-format shellcheck"
BUILD_DIR=$top/build tests/setup.sh -DCWSFS_WERROR=ON

step "every command the scripts run is installed by setup.sh"
python3 tests/check-commands.py

step "format and shell lint; module graph without a cycle"
clang-format --dry-run -Werror src/*.c include/*.h tests/unit/*.c
python3 tests/depgraph.py build --check >/dev/null || { python3 tests/depgraph.py build; exit 1; }
shellcheck -S warning -x tests/*.sh tests/integration/*.sh examples/*.sh bench/*.sh .ci/run \
    contrib/completion/cwsfs

# The sanitizer build compiles while the unit and backend tests run (they mostly wait).
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCWSFS_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" >build-asan/build.log 2>&1 &
asan_build=$!

step "unit tests"
ctest --test-dir build --output-on-failure

step "local backend tests"
(cd contrib/local-backend && npm test)

step "AddressSanitizer + UBSan build (started above)"
wait $asan_build || { cat build-asan/build.log; exit 1; }

# Two integration files at once: each has its own backend and mount and mostly waits on
# its sandboxes, so on two cores this takes 0.6-0.7 of the time of one at a time.
export IT_JOBS=${IT_JOBS:-2}

step "integration tests"
CWSFS_BIN=$top/build/cwsfs tests/integration/run.sh

step "AddressSanitizer + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure
CWSFS_BIN=$top/build-asan/cwsfs tests/integration/run.sh
unset ASAN_OPTIONS UBSAN_OPTIONS

step "valgrind: unit tests"
for t in build/test_*; do
    [ -x "$t" ] || continue
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite "$t" >/dev/null
done

step "valgrind: the mount"
CWSFS_BIN=$top/build/cwsfs \
CWSFS_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
    tests/integration/run.sh ${CWSFS_VALGRIND_TESTS:-test_exec.sh}

step "all tests passed"
