#!/bin/sh
# SPDX-License-Identifier: MIT
#
# gdb.sh - the gdb extension (tools/gdb/kgreen-gdb.py), in batch mode:
# auto-loaded beside libkgreen.so, `info coroutines` lists the parked
# coroutines of gdb_target with their names, states and waits, and
# `coroutine N bt` shows a parked one's frames, then the thread's own
# again. TAP.
set -u
here=$(cd "$(dirname "$0")" && pwd)
echo "TAP version 13"
if [ -n "${KG_TEST_SANITIZED:-}" ]; then
	echo "1..0 # SKIP the plain build only (gdb_target is built with $KG_TEST_SANITIZED)"
	exit 0
fi
command -v gdb >/dev/null || { echo "1..0 # SKIP gdb is not installed"; exit 0; }
gdb -batch -nx -ex 'python print(1)' >/dev/null 2>&1 ||
	{ echo "1..0 # SKIP this gdb has no Python"; exit 0; }
target=$here/gdb_target_so
lib=$(cd "$here/../lib" && pwd)
[ -x "$target" ] && [ -f "$lib/libkgreen.so.0.1-gdb.py" ] ||
	{ echo "1..0 # SKIP gdb_target_so or the auto-load script was not built"; exit 0; }
echo "1..11"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
n=0
check() {	# description, then a grep -E pattern the output must match
	n=$((n + 1))
	if grep -Eq -- "$2" "$out"; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		sed 's/^/# /' "$out"
	fi
}

# auto-load: only the safe path is given, never the script
gdb -batch -nx -iex "set auto-load safe-path $lib" \
	-ex 'break gdb_target_ready' -ex run \
	-ex 'info coroutines' \
	-ex 'echo --- 3\n' -ex 'coroutine 3 bt' \
	-ex 'echo --- 2\n' -ex 'coroutine 2 bt' \
	-ex 'echo --- own\n' -ex 'bt 1' \
	-ex 'echo --- 1\n' -ex 'coroutine 1 bt' \
	-ex 'echo --- 99\n' -ex 'coroutine 99 bt' \
	-ex kill "$target" >"$out" 2>&1

check "info coroutines lists the running main coroutine and its worker" \
	'^ +1 +main +running +on worker [0-9]+ \(gdb thread [0-9]+\) +main_co'
check "a sleeping coroutine: name, state, where" \
	'^ +2 +sleeper +waiting +sleep +sleeper'
check "a coroutine in a channel receive, with the channel" \
	'^ +3 +receiver +waiting +chan recv 0x[0-9a-f]+ +receiver'
check "a coroutine in WaitGroup.Wait" \
	'^ +4 +waiter +waiting +sync.WaitGroup.Wait 0x[0-9a-f]+ +waiter'
check "a coroutine waiting for a descriptor, with its number" \
	'^ +5 +reader +waiting +fd read [0-9]+ +reader'
check "a coroutine running off its proc after a time slice" \
	'^ +[0-9]+ +hog +running +on worker [0-9]+ .*preempted.* +hog'
check "coroutine 3 bt: its frames, from the channel to its entry" \
	'^#[0-9]+ .* in receive_one \(\)'
check "coroutine 2 bt: kg_sleep called from sleeper" \
	'^#[0-9]+ .* in sleeper \(p='
check "the thread's own frames afterwards" \
	'^#0 +gdb_target_ready \(\)'
check "a running coroutine's frames are its worker's: said, not shown" \
	'coroutine 1 is running on worker [0-9]+'
check "an unknown coroutine is an error" 'no live coroutine 99'
