#!/bin/sh
# SPDX-License-Identifier: MIT
#
# go_perm.sh - Go's test/chan/perm.go: a receive-only handle cannot send
# or close, a send-only handle cannot receive, and neither converts into
# the other or back into a channel, all rejected by the compiler. Each
# line of perm.go becomes a snippet compiled against kgreen.h: the ones
# marked ok must compile, the ones marked ERROR must not. (Go's range
# over a channel has no C counterpart; it is a receive, covered by the
# kg_recv lines.) TAP.
set -u
src=${KG_SRCDIR:-}
cc=${CC:-cc}
echo "TAP version 13"
[ -r "$src/userlib/include/kgreen.h" ] ||
	{ echo "1..0 # SKIP KG_SRCDIR does not name the source tree"; exit 0; }
command -v "$cc" >/dev/null || { echo "1..0 # SKIP no C compiler ($cc)"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0

# check ok|error 'description' 'statements'
check() {
	want=$1 what=$2 body=$3
	n=$((n + 1))
	cat >"$tmp/t.c" <<EOC
#include <kgreen.h>
void f(kg_chan_t *c, kg_sendch_t cs, kg_recvch_t cr);
void f(kg_chan_t *c, kg_sendch_t cs, kg_recvch_t cr)
{
	int x = 0;
	(void)c; (void)cs; (void)cr; (void)x;
	$body;
}
EOC
	if "$cc" -std=gnu11 -Wall -Werror -fsyntax-only -I"$src/userlib/include" \
		"$tmp/t.c" >"$tmp/log" 2>&1; then got=ok; else got=error; fi
	if [ "$got" = "$want" ]; then
		echo "ok $n - $what ($want)"
	else
		echo "not ok $n - $what: wanted $want, got $got"
		sed 's/^/# /' "$tmp/log"
		fails=$((fails + 1))
	fi
}

echo "1..20"
check ok    'cr = c'             'cr = kg_chan_receiver(c)'
check ok    'cs = c'             'cs = kg_chan_sender(c)'
check error 'c = cr'             'c = cr'
check error 'c = cs'             'c = cs'
check error 'cr = cs'            'cr = cs'
check error 'cs = cr'            'cs = cr'
check ok    'c <- 0'             'kg_chan_send(c, &x)'
check ok    '<-c'                'kg_chan_recv(c, &x)'
check error 'cr <- 0'            'kg_send(cr, &x)'
check ok    '<-cr'               'kg_recv(cr, &x)'
check ok    'cs <- 0'            'kg_send(cs, &x)'
check error '<-cs'               'kg_recv(cs, &x)'
check error 'select case cr <- 0' 'struct kg_case k = { cr, KG_SEND, &x, 0 }; (void)k'
check error 'select case <-cs'   'struct kg_case k = { cs, KG_RECV, &x, 0 }; (void)k'
check ok    'select case c <- 0' 'struct kg_case k = { c, KG_SEND, &x, 0 }; (void)k'
check ok    'close(c)'           'kg_chan_close(c)'
check ok    'close(cs)'          'kg_close(cs)'
check error 'close(cr)'          'kg_close(cr)'
check error 'kg_chan_close(cr)'  'kg_chan_close(cr)'
check error 'kg_chan_send(cr)'   'kg_chan_send(cr, &x)'
[ "$fails" -eq 0 ]
