#!/bin/sh
# SPDX-License-Identifier: MIT
#
# install.sh - `make install` into a scratch DESTDIR, then build programs
# out of tree against that copy only, as a user would: pkg-config for the
# flags, the shared library by its SONAME, the static library with
# --static, and the public header as C++. TAP.
set -u
src=${KG_SRCDIR:?KG_SRCDIR names the source tree}
echo "TAP version 13"
if [ -n "${KG_TEST_SANITIZED:-}" ]; then
	echo "1..0 # SKIP installs the plain build, not the $KG_TEST_SANITIZED one"
	exit 0
fi
for t in pkg-config readelf g++; do
	command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed"; exit 0; }
done
echo "1..7"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/log"; }

if make -s -C "$src" install DESTDIR="$root" PREFIX=/usr/local >"$tmp/log" 2>&1 &&
	[ -f "$root/usr/local/include/kgreen.h" ] &&
	[ -f "$root/usr/local/lib/libkgreen.a" ] &&
	[ -f "$root/usr/local/src/kgreen-0.1/dkms.conf" ]; then
	ok "make install DESTDIR=... PREFIX=/usr/local"
else
	nok "make install DESTDIR=... PREFIX=/usr/local"
fi

lib=$root/usr/local/lib
if readelf -d "$lib/libkgreen.so" 2>"$tmp/log" | grep -q 'SONAME.*\[libkgreen\.so\.0\]'; then
	ok "libkgreen.so has SONAME libkgreen.so.0"
else
	nok "libkgreen.so has SONAME libkgreen.so.0"
fi

export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root"
cp "$src/examples/worker_pool.c" "$tmp/prog.c"
# shellcheck disable=SC2046
if cc -std=gnu11 -Wall -Werror -o "$tmp/prog" "$tmp/prog.c" \
	$(pkg-config --cflags --libs kgreen) >"$tmp/log" 2>&1 &&
	LD_LIBRARY_PATH="$lib" "$tmp/prog" >"$tmp/out" 2>&1 &&
	grep -q . "$tmp/out" &&
	LD_LIBRARY_PATH="$lib" ldd "$tmp/prog" | grep -q "$lib/libkgreen.so.0"; then
	ok "an example built with pkg-config --cflags --libs kgreen runs on the installed .so"
else
	cat "$tmp/out" >>"$tmp/log" 2>/dev/null
	nok "an example built with pkg-config --cflags --libs kgreen runs on the installed .so"
fi

# shellcheck disable=SC2046
if cc -std=gnu11 -o "$tmp/prog-static" "$tmp/prog.c" \
	$(pkg-config --cflags kgreen) -L"$lib" -Wl,-Bstatic -lkgreen -Wl,-Bdynamic \
	$(pkg-config --static --libs-only-other --libs-only-l kgreen | sed 's/-lkgreen//') \
	>"$tmp/log" 2>&1 && "$tmp/prog-static" >/dev/null 2>&1 &&
	! ldd "$tmp/prog-static" | grep -q libkgreen; then
	ok "the same linked statically with pkg-config --static"
else
	nok "the same linked statically with pkg-config --static"
fi

cat >"$tmp/cxx.cc" <<'CXX'
#include <kgreen.h>
#include <cstdio>
static kg_wg_t wg = KG_WG_INIT;
static void worker(void *arg)
{
	kg_chan_t *ch = static_cast<kg_chan_t *>(arg);
	int v = 42;
	kg_chan_send(ch, &v);
	kg_wg_done(&wg);
}
static void main_co(void *)
{
	kg_chan_t *ch = kg_chan_make(sizeof(int), 0);
	int v = 0;
	kg_wg_add(&wg, 1);
	kg_go(worker, ch);
	kg_chan_recv(ch, &v);
	kg_wg_wait(&wg);
	kg_chan_free(ch);
	std::printf("%d\n", v);
}
int main() { return kg_run(main_co, nullptr, nullptr) ? 1 : 0; }
CXX
# shellcheck disable=SC2046
if g++ -std=c++17 -Wall -Wextra -Werror -o "$tmp/cxx" "$tmp/cxx.cc" \
	$(pkg-config --cflags --libs kgreen) >"$tmp/log" 2>&1 &&
	[ "$(LD_LIBRARY_PATH="$lib" "$tmp/cxx" 2>"$tmp/log")" = 42 ]; then
	ok "kgreen.h compiles as C++17 and the program runs"
else
	nok "kgreen.h compiles as C++17 and the program runs"
fi

if [ -f "$root/usr/local/src/kgreen-0.1/kgreen.c" ] &&
	[ -f "$root/usr/local/src/kgreen-0.1/Kbuild" ] &&
	[ -f "$root/usr/local/src/kgreen-0.1/include/uapi/kgreen.h" ] &&
	grep -q '^PACKAGE_VERSION="0.1"' "$root/usr/local/src/kgreen-0.1/dkms.conf"; then
	ok "the module's sources and dkms.conf for dkms install kgreen/0.1"
else
	ls -R "$root/usr/local/src" >"$tmp/log" 2>&1
	nok "the module's sources and dkms.conf for dkms install kgreen/0.1"
fi

if [ -f "$root/usr/local/share/gdb/auto-load/usr/local/lib/libkgreen.so.0.1-gdb.py" ] &&
	[ -f "$root/usr/local/share/kgreen/kgreen-gdb.py" ]; then
	ok "the gdb extension in gdb's auto-load tree and in share/kgreen"
else
	find "$root" -name '*gdb*' >"$tmp/log" 2>&1
	nok "the gdb extension in gdb's auto-load tree and in share/kgreen"
fi
