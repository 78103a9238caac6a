#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run_kselftest.sh - run the installed kgreen suites listed in
# kselftest-list.txt from this directory: through prove when it is there,
# else one after another with a TAP summary, as kselftest's runner does.
# Exit status: 0 when every suite passed or skipped, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1
export KG_EXAMPLES_DIR="$here/examples"
suites=$(sed -n 's/^kgreen://p' kselftest-list.txt)

if command -v prove >/dev/null 2>&1; then
	# shellcheck disable=SC2086
	exec prove --norc --exec '' $(for s in $suites; do printf './%s ' "$s"; done)
fi

n=0
for s in $suites; do n=$((n + 1)); done
echo "TAP version 13"
echo "1..$n"
i=0
rc=0
status=$(mktemp)
trap 'rm -f "$status"' EXIT
for s in $suites; do
	i=$((i + 1))
	echo "# selftests: kgreen: $s"
	{ "./$s" 2>&1; echo $? >"$status"; } | sed 's/^/# /'
	r=$(cat "$status")
	case $r in
	0) echo "ok $i selftests: kgreen: $s" ;;
	4) echo "ok $i selftests: kgreen: $s # SKIP" ;;
	*) echo "not ok $i selftests: kgreen: $s # exit=$r"; rc=1 ;;
	esac
done
exit $rc
