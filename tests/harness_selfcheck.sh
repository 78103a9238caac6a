#!/bin/sh
# SPDX-License-Identifier: MIT
#
# harness_selfcheck.sh - check that the harness reports failures, crashes,
# timeouts and skips as it should, by running harness_failing (TAP).
set -u
dir=${KG_TEST_BIN_DIR:-$(cd "$(dirname "$0")" && pwd)}
bin="$dir/harness_failing"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

n=0
fail=0
check() { # description, then a command that must succeed
	n=$((n + 1))
	desc=$1
	shift
	if "$@" >/dev/null 2>&1; then
		echo "ok $n $desc"
	else
		echo "not ok $n $desc"
		sed 's/^/# /' "$out"
		fail=1
	fi
}

echo "TAP version 13"
echo "1..11"
"$bin" >"$out" 2>&1
rc=$?
check "a failing suite exits 1" test $rc -eq 1
check "failure line shows both values" grep -q "Expected 5 (5) == seen (7)" "$out"
check "TH_LOG after a failed check is printed" grep -q "logged after the failure" "$out"
check "ASSERT ends the test" sh -c "! grep -q 'not reached' '$out'"
check "EXPECT lets the test go on" grep -q "reached after EXPECT" "$out"
check "a crash is not ok" grep -q "^not ok 4 crashes" "$out"
check "a hang is killed and reported" sh -c "grep -q 'hangs: Test terminated by timeout' '$out' && grep -q '^not ok 5 hangs' '$out'"
check "skip reason reaches the TAP line" grep -q "^ok 6 only_skips # SKIP nothing to do here" "$out"
"$bin" -l >"$out" 2>&1
check "-l lists every test" test "$(wc -l <"$out")" -eq 7
"$bin" -r passes >"$out" 2>&1
rc=$?
check "-r runs one test" sh -c "test $rc -eq 0 && grep -q '^1\.\.1$' '$out'"
"$bin" -r only_skips >"$out" 2>&1
rc=$?
check "an all-skipped run exits 4" test $rc -eq 4
exit $fail
