#!/bin/sh
# SPDX-License-Identifier: MIT
#
# layers.sh - libkgreen's files call only downward. Documentation/
# architecture.md ("Where things are") gives each file of userlib/ a layer;
# this reads which file of libkgreen.a defines each symbol and which files
# use it (nm), and fails if a file uses anything of a file in its own layer
# or a higher one (a call back up: the files would form a circle), or if
# the table and the library disagree on the files. Calls through a
# function pointer (the backends' ops, timer and post-switch callbacks,
# the worker threads' body) are not symbol references and are the allowed
# way up. TAP.
set -u
src=${KG_SRCDIR:-}
lib=${KG_LIBDIR:-}/libkgreen.a
doc=$src/Documentation/architecture.md
echo "TAP version 13"
[ -r "$doc" ] ||
	{ echo "1..0 # SKIP KG_SRCDIR does not name the source tree"; exit 0; }
[ -r "$lib" ] ||
	{ echo "1..0 # SKIP KG_LIBDIR does not hold libkgreen.a"; exit 0; }
command -v nm >/dev/null || { echo "1..0 # SKIP no nm"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "| 3 | `userlib/handoff.c` | ..." -> "handoff 3" (the object's name)
sed -n '/^## Where things are/,/^## /p' "$doc" |
	sed -n 's/^| *\([0-9][0-9]*\) *| *`userlib\/\([^`]*\)` *|.*/\2 \1/p' |
	sed 's/^arch\/switch_[^ ]*\.S /switch.o /; s/\.c /.o /' |
	sort >"$tmp/layers"
# "lib.a:chan.o:                 U kg_sleep" / "... T kg_chan_send"
nm -A "$lib" 2>/dev/null | sed 's/^[^:]*:\([^:]*\):/\1 /' >"$tmp/nm"
awk 'NF == 4 && $3 ~ /^[TDBRCV]$/ { print $4, $1 }' "$tmp/nm" | sort -u >"$tmp/defs"
awk '$2 == "U" { print $3, $1 }' "$tmp/nm" | sort -u >"$tmp/uses"
cut -d' ' -f1 "$tmp/layers" | sort -u >"$tmp/documented"
awk '{ print $1 }' "$tmp/nm" | sort -u >"$tmp/members"

n=0
fails=0
result() {	# ok|not description
	n=$((n + 1))
	if [ "$1" = ok ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fails=$((fails + 1))
	fi
}

[ -s "$tmp/layers" ] && r=ok || r=not
result $r "architecture.md has a layer table"
missing=$(comm -23 "$tmp/members" "$tmp/documented" | tr '\n' ' ')
[ -z "$missing" ] && r=ok || r=not
result $r "every file of libkgreen.a has a layer${missing:+ (missing: $missing)}"
stale=$(comm -13 "$tmp/members" "$tmp/documented" | tr '\n' ' ')
[ -z "$stale" ] && r=ok || r=not
result $r "every file in the table is in libkgreen.a${stale:+ (not built: $stale)}"

# "user used-symbol definer" for every reference across files
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $1, $3 }' |
	sort >"$tmp/refs"
awk 'NR == FNR { layer[$1] = $2; next }
     { lu = layer[$1]; ld = layer[$3]
       if (lu == "" || ld == "" || lu + 0 <= ld + 0)
	       printf "%s (layer %s) uses %s of %s (layer %s)\n",
		      $1, lu, $2, $3, ld }' \
	"$tmp/layers" "$tmp/refs" >"$tmp/up"
while read -r obj layer; do
	if grep -q "^$obj " "$tmp/up"; then
		result not "$obj (layer $layer) calls only downward"
		grep "^$obj " "$tmp/up" | sed 's/^/# /'
	else
		result ok "$obj (layer $layer) calls only downward"
	fi
done <"$tmp/layers"
echo "1..$n"
[ "$fails" -eq 0 ]
