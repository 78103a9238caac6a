#!/bin/sh
# SPDX-License-Identifier: MIT
#
# trace.sh - kgreen-trace on a live kgreen program (the demo's worker
# pool, sysmon and bpf): the live view names the workers and what they
# do; `record` writes a trace that is valid JSON with coroutine runs per
# worker, blocks named by system call, and handoffs as flows. Then on
# coroutines waiting for descriptors (fd_target): the live view counts
# the waits, and the trace names each one's descriptor; and fd_target's
# hog, preempted at the end of its time slices. TAP.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tools=${KG_TOOLS_DIR:-$here/../tools}
pool=${KG_EXAMPLES_DIR:-$here/../examples}/blocking_pool
echo "TAP version 13"
[ -x "$tools/kgreen-trace" ] ||
	{ echo "1..0 # SKIP kgreen-trace was not built (no BPF toolchain)"; exit 0; }
[ -n "${KG_TEST_SANITIZED:-}" ] &&
	{ echo "1..0 # SKIP the plain build only"; exit 0; }
command -v python3 >/dev/null ||
	{ echo "1..0 # SKIP python3 (to check the JSON) is not installed"; exit 0; }
tmp=$(mktemp -d)
pid2=
trap 'kill $pid $pid2 2>/dev/null; rm -rf "$tmp"' EXIT
"$pool" 200000 sysmon >/dev/null 2>&1 &
pid=$!
sleep 0.3
if ! "$tools/kgreen-trace" -n 1 -i 0.5 $pid >"$tmp/view" 2>"$tmp/err"; then
	if grep -q "cannot load the BPF programs" "$tmp/err"; then
		echo "1..0 # SKIP $(cat "$tmp/err")"
		exit 0
	fi
fi
echo "1..11"
n=0
check() {	# description, file, grep -E pattern
	n=$((n + 1))
	if grep -Eq -- "$3" "$2"; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		sed 's/^/# /' "$2" "$tmp/err"
	fi
}
# Any index: a worker that ran nothing in the interval (worker 0 may sit
# blocked all along while others take its proc) is not listed.
check "the live view lists workers by index and thread id" "$tmp/view" \
	'^[0-9]+ +[0-9]+ +(running coroutine|blocked in|scheduler)'
check "and a worker blocked in a named system call" "$tmp/view" \
	'blocked in (read|fsync|nanosleep|futex|clock_nanosleep)'
check "and the handoff rate" "$tmp/view" 'handoffs [0-9]+/s'

"$tools/kgreen-trace" record -d 0.5 -o "$tmp/trace.json" $pid 2>"$tmp/err"
python3 - "$tmp/trace.json" >"$tmp/json" 2>&1 <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
names = {e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "thread_name"}
kinds = {(e.get("ph"), e.get("cat")) for e in ev}
blocks = {e["name"] for e in ev if e.get("cat") == "block"}
print("valid JSON,", len(ev), "events")
print("threads:", " ".join(sorted(names)))
print("kinds:", " ".join("%s/%s" % k for k in sorted(kinds, key=str)))
print("blocks:", " ".join(sorted(blocks)))
s = {e["id"] for e in ev if e.get("ph") == "s"}
f = {e["id"] for e in ev if e.get("ph") == "f"}
print("flows:", len(s), "matched" if s and s == f else "unmatched")
PY
check "record writes valid JSON" "$tmp/json" '^valid JSON, [0-9]+ events'
check "coroutine runs on named worker threads" "$tmp/json" \
	'threads: .*worker [0-9]+'
check "blocks named by their system call" "$tmp/json" \
	'blocks: .*(nanosleep|read|fsync)'
check "handoffs as flows, each start with its end" "$tmp/json" \
	'^flows: [1-9][0-9]* matched'

# descriptor waits
kill $pid 2>/dev/null
"$here/fd_target" 5 >/dev/null 2>&1 &
pid2=$!
sleep 0.3
"$tools/kgreen-trace" -n 1 -i 1 $pid2 >"$tmp/view2" 2>"$tmp/err"
check "the live view counts descriptor waits" "$tmp/view2" \
	'^descriptor waits [1-9][0-9]*/s'
check "and coroutines preempted at the end of a time slice" "$tmp/view2" \
	'preempted [1-9][0-9]*/s'
"$tools/kgreen-trace" record -d 0.6 -o "$tmp/trace2.json" $pid2 2>"$tmp/err"
python3 - "$tmp/trace2.json" >"$tmp/json2" 2>&1 <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
print("fd events:", " ".join(sorted({e["name"].split()[2] + " " + e["name"].split()[-1]
      for e in ev if e.get("cat") == "fd"})))
print("preempted:", sum(1 for e in ev if e.get("cat") == "preempt"))
PY
check "the trace names each wait's descriptor and its end" "$tmp/json2" \
	'^fd events: .*read wait'
check "and each preempted coroutine's return" "$tmp/json2" \
	'^preempted: [1-9]'
