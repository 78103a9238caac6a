#!/bin/sh
# SPDX-License-Identifier: MIT
#
# examples.sh - run every example program and check what it prints (TAP).
# Finds the binaries in KG_EXAMPLES_DIR (default: ../examples next to the
# directory holding this script's suites, i.e. $OUT/examples).
set -u
here=$(cd "$(dirname "$0")" && pwd)
dir=${KG_EXAMPLES_DIR:-$here/../examples}

echo "TAP version 13"
echo "1..2"
fail=0

# demo: 100000 coroutines (fewer under sanitizers); it checks its result
n=100000
[ -n "${KG_TEST_SANITIZED:-}" ] && n=4000
out=$("$dir/demo" $n 2>&1)
rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "checksum .* (ok)" &&
	echo "$out" | grep -q "procs/workers"; then
	echo "ok 1 demo"
else
	echo "$out" | sed 's/^/# /'
	echo "not ok 1 demo (exit $rc)"
	fail=1
fi
# the same under valgrind: stacks are registered, so it must run clean
if [ -n "${KG_TEST_SANITIZED:-}" ]; then
	echo "ok 2 demo under valgrind # SKIP sanitizer build"
elif ! command -v valgrind >/dev/null 2>&1; then
	echo "ok 2 demo under valgrind # SKIP valgrind is not installed"
else
	out=$(valgrind -q --error-exitcode=9 "$dir/demo" 300 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && echo "$out" | grep -q "checksum .* (ok)"; then
		echo "ok 2 demo under valgrind"
	else
		echo "$out" | sed 's/^/# /'
		echo "not ok 2 demo under valgrind (exit $rc)"
		fail=1
	fi
fi
exit $fail
