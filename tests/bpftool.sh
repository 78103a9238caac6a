#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bpftool.sh - the BPF backend explains itself to bpftool: its programs and
# maps have stable kg_ names, and the counters and the system call
# histogram print as named fields (BTF).
dir=$(dirname "$0")
echo "TAP version 13"
echo "1..4"
skip_all() {
	for i in 1 2 3 4; do echo "ok $i # SKIP $1"; done
	exit 4
}
command -v bpftool >/dev/null 2>&1 || skip_all "bpftool is not installed"
command -v perl >/dev/null 2>&1 || skip_all "perl is not installed"
[ "$(id -u)" -eq 0 ] || skip_all "bpftool needs root"

tmp=$(mktemp -d)
trap 'exec 3>&-; rm -rf "$tmp"' EXIT
mkfifo "$tmp/in"
KGREEN_BPF_SYSLAT=1 "$dir/bpf_blocker" <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
pid=$!
exec 3>"$tmp/in"
i=0
while ! grep -q ready "$tmp/out" 2>/dev/null; do
	if ! kill -0 $pid 2>/dev/null; then
		wait $pid
		rc=$?
		[ $rc -eq 4 ] && skip_all "the bpf backend cannot load: $(cat "$tmp/err")"
		echo "# bpf_blocker exited with $rc: $(cat "$tmp/err")"
		for i in 1 2 3 4; do echo "not ok $i bpf_blocker failed"; done
		exit 1
	fi
	i=$((i + 1))
	[ $i -gt 200 ] && break
	sleep 0.05
done

# the blocker's own maps: their ids are in its file descriptors' fdinfo
# (other kgreen processes may have maps of the same names)
ids=$(grep -h '^map_id:' /proc/$pid/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u)
map_id() {
	for id in $ids; do
		bpftool -j map show id "$id" 2>/dev/null | grep -q "\"name\":\"$1\"" &&
			{ echo "$id"; return; }
	done
	echo none
}
export WSTATS=$(map_id kg_wstats) SYSLAT=$(map_id kg_syslat) SHARED=$(map_id kg_shared)
echo "# maps of pid $pid: kg_wstats $WSTATS, kg_syslat $SYSLAT, kg_shared $SHARED"

fail=0
check() {	# check N NAME COMMAND...
	n=$1 name=$2
	shift 2
	if out=$("$@" 2>&1); then
		echo "ok $n $name"
	else
		printf '%s\n' "$out" | sed 's/^/# /'
		echo "not ok $n $name"
		fail=1
	fi
}

# the programs, by name (bpftool shows the first 15 characters)
check 1 "programs kg_sched_switch, kg_sys_enter, kg_sys_exit" sh -c '
	s=$(bpftool prog show) &&
	for p in kg_sched_switch kg_sys_enter kg_sys_exit; do
		echo "$s" | grep -q "name $p" || { echo "no program $p"; exit 1; }
	done'

# the per-worker counters of this process: blocks and handoffs, by field name
check 2 "kg_wstats counts blocks and handoffs for the blocker's workers" \
	sh -c 'bpftool -j map dump id $WSTATS | perl -MJSON::PP -e "
	my \$all = decode_json(join q(), <STDIN>);
	my (\$b, \$h, \$tid) = (0, 0, 0);
	for my \$e (@\$all) {
		my \$v = \$e->{formatted}{value} or next;
		\$b += \$v->{blocks}; \$h += \$v->{handoffs};
		\$tid++ if \$v->{tid} > 0;
	}
	print qq(workers with tids: \$tid, blocks \$b, handoffs \$h\n);
	exit !(\$tid && \$b >= 20 && \$h >= 20);"'

# the system call histogram: read (0) has calls, buckets and a total
check 3 "kg_syslat has a histogram for read()" \
	sh -c 'bpftool -j map dump id $SYSLAT | perl -MJSON::PP -e "
	my \$all = decode_json(join q(), <STDIN>);
	for my \$e (@\$all) {
		my \$f = \$e->{formatted} or next;
		next unless \$f->{key} == 0;
		my \$v = \$f->{value};
		my \$n = 0; \$n += \$_ for @{\$v->{log2_ns}};
		print qq(read: count \$v->{count}, in buckets \$n, max \$v->{max_ns} ns\n);
		exit !(\$v->{count} >= 20 && \$n == \$v->{count} && \$v->{total_ns} > 0);
	}
	print qq(no entry for read\n); exit 1;"'

# the shared state map: the ABI version and the proc owned
check 4 "kg_shared shows the ABI version and proc slots" \
	sh -c 'bpftool -j map dump id $SHARED | perl -MJSON::PP -e "
	my \$all = decode_json(join q(), <STDIN>);
	for my \$e (@\$all) {
		my \$v = \$e->{formatted}{value} or next;
		next unless \$v->{hdr}{version};
		print qq(version \$v->{hdr}{version}, nprocs \$v->{hdr}{nprocs}\n);
		exit !(\$v->{hdr}{version} == 3 && \$v->{hdr}{nprocs} == 1);
	}
	exit 1;"'

exec 3>&-
wait $pid
exit $fail
