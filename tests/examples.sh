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
echo "1..15"
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
	# sysmon: valgrind does not know the bpf() syscall's attributes
	out=$(KGREEN_BACKEND=sysmon valgrind -q --error-exitcode=9 "$dir/demo" 300 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && echo "$out" | grep -q "checksum .* (ok)"; then
		echo "ok 2 demo under valgrind"
	else
		echo "$out" | sed 's/^/# /'
		echo "not ok 2 demo under valgrind (exit $rc)"
		fail=1
	fi
fi

# blocking_pool (make demo): the table, a row per backend, its results
# checked by itself (exit status); kernel help must hand procs off
backends="bpf sysmon off"
[ -n "${KG_TEST_SANITIZED:-}" ] && backends="sysmon off"
out=$("$dir/blocking_pool" 120 $backends 2>&1)
rc=$?
row='[0-9]+\.[0-9] +[0-9]+ +[0-9.]+ +[0-9.]+$'
if [ $rc -eq 0 ] && echo "$out" | grep -q '^backend  *wall ms  *handoffs' &&
	echo "$out" | grep -Eq "^sysmon \(calls marked\) +$row" &&
	echo "$out" | grep -Eq "^off \(sysmon, unmarked\) +[0-9.]+ +0 " &&
	! echo "$out" | grep -Eq '^bpf +[0-9.]+ +0 '; then
	echo "ok 3 blocking_pool (make demo): $(echo $backends | tr ' ' ,)"
else
	echo "$out" | sed 's/^/# /'
	echo "not ok 3 blocking_pool (exit $rc)"
	fail=1
fi

# The Go tutorials: each checks its own results (exit status) and prints
# the lines its Go original would; check those too.
#   [EXARGS="ARGS..."] example NAME [COUNT REGEX]...
# COUNT: how many output lines must match the extended REGEX ("+": at least
# one); a REGEX starting with "@" is matched against the whole output with
# its lines joined by ";", to check their order.
t=3
tmo=""
command -v timeout >/dev/null 2>&1 &&
	tmo="timeout $((30 * ${KG_TEST_TIMEOUT_MULT:-1}))"
example() {
	name=$1
	shift
	t=$((t + 1))
	if [ ! -x "$dir/$name" ]; then
		echo "not ok $t $name (no $dir/$name: not built)"
		fail=1
		return
	fi
	# shellcheck disable=SC2086 # EXARGS: several words
	out=$($tmo "$dir/$name" ${EXARGS:-} 2>&1)
	rc=$?
	EXARGS=""
	why=""
	[ $rc -eq 0 ] || why="exit $rc"
	joined=$(printf '%s\n' "$out" | tr '\n' ';')
	while [ $# -ge 2 ]; do
		want=$1 re=$2
		shift 2
		case $re in
		@*)
			printf '%s\n' "$joined" | grep -Eq -- "${re#@}" ||
				why="${why:+$why; }output not in the order /${re#@}/" ;;
		*)
			n=$(printf '%s\n' "$out" | grep -Ec -- "$re")
			if [ "$want" = + ]; then
				[ "$n" -ge 1 ] || why="${why:+$why; }no line /$re/"
			elif [ "$n" -ne "$want" ]; then
				why="${why:+$why; }$n lines /$re/, expected $want"
			fi ;;
		esac
	done
	if [ -z "$why" ]; then
		echo "ok $t $name"
	else
		printf '%s\n' "$out" | sed 's/^/# /'
		echo "not ok $t $name ($why)"
		fail=1
	fi
}

example goroutine 5 '^hello$' 5 '^world$' 1 '^hello x5, world x5$'
example channels 1 '^(-5 17|17 -5) 12$' 1 '^len 2 cap 2$' \
	1 '@;1;2;Washington Tripoli London Beijing Tokyo ;$'
example directions 1 '^passed message$' 5 '^ping [13579]$' \
	5 '^pong (2|4|6|8|10)$' 1 '^ping hit 5, pong hit 5$'
example worker_pool 5 '^worker [123] started  job [1-5]$' \
	1 'finished job 1$' 1 'finished job 2$' 1 'finished job 3$' \
	1 'finished job 4$' 1 'finished job 5$' \
	5 '^worker [123] finished job [1-5]$' \
	1 '^5 jobs done by 3 workers in [0-9]+ ms'
example fanin + '^Joe 0$' + '^Ann 0$' \
	1 "^You're both boring; I'm leaving\.$" \
	1 '^heard Joe [1-9][0-9]* times, Ann [1-9][0-9]* times$'
example pipeline 1 '@^16;81;(4;9|9;4);' \
	1 '^sum of squares 1\.\.100 on 4 workers: 338350$'
example mutex_counter 1 '^somekey = 2000$'
example waitgroup 5 '^Worker [1-5] starting$' 5 '^Worker [1-5] done$' \
	1 '^all 5 workers done$'
# the echo server against its own clients on 127.0.0.1
conns=200
[ -n "${KG_TEST_SANITIZED:-}" ] && conns=50
EXARGS="--selftest $conns" example echo_server \
	1 "^$conns clients x 100 round trips: ok\$"
EXARGS="--selftest $conns" example http_server \
	1 "^$conns keep-alive clients x 100 requests: ok\$"
# their Go twins (examples/go/), built where Go is installed: the same
# self-test, the same line
for twin in echo_server http_server; do
	if [ ! -x "$dir/go-$twin" ]; then
		t=$((t + 1))
		echo "ok $t go-$twin # SKIP not built (no Go here)"
		continue
	fi
	case $twin in
	echo_server) line="^$conns clients x 100 round trips: ok\$" ;;
	*) line="^$conns keep-alive clients x 100 requests: ok\$" ;;
	esac
	EXARGS="--selftest $conns" example "go-$twin" 1 "$line"
done
exit $fail
