# SPDX-License-Identifier: MIT
#
# kgreen top-level build.
#
#   make            build libkgreen (.so, .a), the tests and the examples
#   make check      install what is missing, build, run every suite (prove)
#   make demo       install what is missing, build, run the demo (Go's
#                   worker pool with blocking calls, once per backend)
#   make vmdemo     the same in a VM with kgreen.ko loaded
#   make bench      run the benchmarks beside their Go twins
#   make check-aarch64  the suites built for aarch64, run under qemu-user
#   make deps       install missing Debian packages (tools/install-deps)
#   make kmod       build kmod/kgreen.ko for each Debian kernel whose headers
#                   are installed (6.1 and 6.12), or for KDIR alone
#   make vmcheck    boot each of Debian's kernels in qemu, load kgreen.ko,
#                   run the kmod and BPF suites there (part of make check)
#   make vmbench    kgreen.ko's benchmarks in that VM
#   make install    PREFIX=/usr/local DESTDIR=: the libraries, kgreen.h,
#                   kgreen.pc, the BPF object, the module's sources for DKMS
#   SAN=address|thread|undefined   sanitizer build (ASan, TSan, UBSan),
#                        outputs under .output/san-$(SAN)
#   BPF=n           build without the BPF backend (sysmon only)
#   V=1             show full commands
#
# Everything built goes under .output/.

VERSION_MAJOR := 0
VERSION_MINOR := 1
SONAME := libkgreen.so.$(VERSION_MAJOR)

SRCDIR := $(abspath .)
ifeq ($(SAN),)
OUT ?= $(SRCDIR)/.output
else
OUT ?= $(SRCDIR)/.output/san-$(SAN)
endif

CC ?= gcc
# the target architecture is the compiler's (cross builds: CC=aarch64-linux-gnu-gcc)
KG_ARCH := $(shell $(CC) -dumpmachine | cut -d- -f1)
ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-7s %s\n' $(1) $(2)
endif

OPT ?= -O2
SAN_FLAGS :=
ifeq ($(SAN),address)
SAN_FLAGS := -fsanitize=address -fno-omit-frame-pointer
OPT := -O1
else ifeq ($(SAN),thread)
SAN_FLAGS := -fsanitize=thread
OPT := -O1
else ifeq ($(SAN),undefined)
# every report is an error: the test that hits one fails
SAN_FLAGS := -fsanitize=undefined -fno-sanitize-recover=undefined
else ifneq ($(SAN),)
$(error SAN must be address, thread or undefined, not '$(SAN)')
endif

CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -g $(OPT) -pthread \
	-I$(SRCDIR)/userlib/include -I$(SRCDIR)/kmod/include $(SAN_FLAGS)
LIB_CFLAGS := $(CFLAGS_BASE) -fPIC -fvisibility=hidden -iquote $(SRCDIR)/userlib \
	$(EXTRA_CFLAGS)

# The BPF backend: built when the target is the build machine's x86_64 and
# clang, bpftool, libbpf and the running kernel's BTF are there (make deps
# installs the tools); otherwise libkgreen falls back to sysmon.
BPF_OUT := $(OUT)/bpf
ifeq ($(KG_ARCH)-$(BPF),x86_64-)
BPF := $(shell command -v clang >/dev/null && command -v bpftool >/dev/null && \
	test -r /usr/include/bpf/libbpf.h && test -r /sys/kernel/btf/vmlinux && \
	echo y)
endif
# USDT probes (sys/sdt.h, Debian's systemtap-sdt-dev): nops until traced
SDT := $(shell $(CC) -E -x c -include sys/sdt.h /dev/null >/dev/null 2>&1 && echo y)
ifeq ($(SDT),y)
LIB_CFLAGS += -DKG_HAVE_SDT
endif
KG_LIBS := -lurcu-memb -pthread -ldl
ifeq ($(BPF),y)
LIB_CFLAGS += -DKG_HAVE_BPF -I$(BPF_OUT)
KG_LIBS += -lbpf
endif
export KG_LIBS

LIB_SRCS := $(wildcard userlib/*.c)
LIB_ASM := userlib/arch/switch_$(KG_ARCH).S
LIB_OBJS := $(patsubst userlib/%.c,$(OUT)/userlib/%.o,$(LIB_SRCS)) \
	$(OUT)/userlib/switch.o
LIB_HDRS := $(wildcard userlib/*.h userlib/include/*.h kmod/include/uapi/*.h)

LIBA := $(OUT)/lib/libkgreen.a
LIBSO := $(OUT)/lib/libkgreen.so.$(VERSION_MAJOR).$(VERSION_MINOR)

export OUT CC SAN

.PHONY: all lib tests examples check check-aarch64 demo bench deps clean help \
	kmod vmcheck vmbench vmdemo install tools

all: lib tests examples tools

lib: $(LIBA) $(LIBSO)

ifeq ($(BPF),y)
$(BPF_OUT)/vmlinux.h:
	$(call msg,GEN,$@)
	@mkdir -p $(@D)
	$(Q)bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

# -mcpu=v3: 32-bit atomic compare-and-swap
$(BPF_OUT)/kgreen.bpf.o: bpf/kgreen.bpf.c $(BPF_OUT)/vmlinux.h kmod/include/uapi/kgreen.h
	$(call msg,BPF,$<)
	$(Q)clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
		-I$(BPF_OUT) -I$(SRCDIR)/kmod/include -c $< -o $@

$(BPF_OUT)/kgreen.skel.h: $(BPF_OUT)/kgreen.bpf.o
	$(call msg,SKEL,$@)
	$(Q)bpftool gen skeleton $< name kgreen_bpf > $@.tmp && mv $@.tmp $@

$(OUT)/userlib/bpf.o: $(BPF_OUT)/kgreen.skel.h

# tools/trace/kgreen-trace: its own BPF programs and skeleton
$(BPF_OUT)/trace.bpf.o: bpf/trace.bpf.c tools/trace/trace.h $(BPF_OUT)/vmlinux.h
	$(call msg,BPF,$<)
	$(Q)clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
		-I$(BPF_OUT) -I$(SRCDIR)/tools/trace \
		-I/usr/include/$(shell $(CC) -dumpmachine) -c $< -o $@

$(BPF_OUT)/trace.skel.h: $(BPF_OUT)/trace.bpf.o
	$(call msg,SKEL,$@)
	$(Q)bpftool gen skeleton $< name kgreen_trace > $@.tmp && mv $@.tmp $@

# system call numbers to names, from the kernel's uapi header
$(OUT)/tools/syscall_names.h:
	@mkdir -p $(@D)
	$(Q){ echo 'static const char *const syscall_names[] = {'; \
	  echo '#include <asm/unistd_64.h>' | $(CC) -dM -E -x c - | \
	  sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9]*\)$$/[\2] = "\1",/p'; \
	  echo '};'; } > $@.tmp && mv $@.tmp $@

TRACE := $(OUT)/tools/kgreen-trace
$(TRACE): tools/trace/kgreen-trace.c tools/trace/trace.h $(BPF_OUT)/trace.skel.h \
		$(OUT)/tools/syscall_names.h kmod/include/uapi/kgreen.h
	$(call msg,CC,$<)
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -g -O2 -I$(BPF_OUT) \
		-I$(OUT)/tools -I$(SRCDIR)/tools/trace -I$(SRCDIR)/kmod/include \
		-o $@ $< -lbpf

tools: $(TRACE)
else
tools:
endif

$(OUT)/userlib/%.o: userlib/%.c $(LIB_HDRS)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LIB_CFLAGS) -c -o $@ $<

$(OUT)/userlib/switch.o: $(LIB_ASM)
	$(call msg,AS,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LIB_CFLAGS) -c -o $@ $<

$(LIBA): $(LIB_OBJS)
	$(call msg,AR,$@)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSO): $(LIB_OBJS) userlib/libkgreen.map tools/gdb/kgreen-gdb.py
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) -shared $(SAN_FLAGS) -pthread -Wl,-soname,$(SONAME) \
		-Wl,--version-script=userlib/libkgreen.map -Wl,-z,noexecstack \
		-o $@ $(LIB_OBJS) $(KG_LIBS)
	$(Q)ln -sf $(notdir $@) $(OUT)/lib/$(SONAME)
	$(Q)ln -sf $(SONAME) $(OUT)/lib/libkgreen.so
	$(Q)cp tools/gdb/kgreen-gdb.py $@-gdb.py

TEST_SAN_FLAGS := $(SAN_FLAGS)
tests: lib
	$(Q)$(MAKE) --no-print-directory -C tests all \
		EXTRA_CFLAGS="$(SAN_FLAGS) $(OPT)" EXTRA_LDFLAGS="$(SAN_FLAGS)"

examples: lib
	$(Q)$(MAKE) --no-print-directory -C examples all \
		EXTRA_CFLAGS="$(SAN_FLAGS)" EXTRA_LDFLAGS="$(SAN_FLAGS)"

# The kernel module, built out of tree into $(OUT)/kbuild/KVER (a copy of
# the sources: kbuild writes its objects beside them), once for every
# Debian -amd64 kernel whose headers are installed (tools/install-deps vm
# brings 6.1 and 6.12), or, with KDIR=..., for that kernel build directory
# alone. KVER (default: the newest) picks the one vmbench and vmdemo boot.
ifneq ($(origin KDIR),undefined)
KVERS := $(shell cat $(KDIR)/include/config/kernel.release 2>/dev/null)
kdir_of = $(KDIR)
else
KVERS := $(shell for d in /lib/modules/*-amd64; do \
	[ -d $$d/build ] && basename $$d; done 2>/dev/null | sort -V)
kdir_of = /lib/modules/$(1)/build
endif
KVER ?= $(lastword $(KVERS))
KBUILD_OUT := $(OUT)/kbuild
kmod_ko = $(KBUILD_OUT)/$(1)/kmod/kgreen.ko
KMOD_KO := $(call kmod_ko,$(KVER))
KMOD_KOS := $(foreach v,$(KVERS),$(call kmod_ko,$(v)))
KMOD_SRCS := Kbuild kmod/Kbuild kmod/kgreen.c kmod/include/uapi/kgreen.h

kmod: $(KMOD_KOS)
	@test -n "$(KVERS)" || { echo "make kmod: no kernel headers in" \
		"/lib/modules/*-amd64/build (tools/install-deps vm, or KDIR=...)" >&2; \
		exit 1; }

$(KBUILD_OUT)/%/kmod/kgreen.ko: $(KMOD_SRCS)
	@test -d $(call kdir_of,$*) || { echo "make kmod: no kernel build" \
		"directory $(call kdir_of,$*) (tools/install-deps vm, or KDIR=...)" >&2; \
		exit 1; }
	$(call msg,KMOD,$@)
	@mkdir -p $(KBUILD_OUT)/$*
	$(Q)tar cf - $(KMOD_SRCS) | tar xf - -C $(KBUILD_OUT)/$*
	$(Q)$(MAKE) --no-print-directory -C $(call kdir_of,$*) M=$(KBUILD_OUT)/$* \
		$(if $(filter 1,$(V)),,-s) modules

# The kernel-side suites in a VM (tools/vmcheck): kgreen.ko and the BPF
# backend on Debian's stock kernel. Skipped, with the reason, where the
# VM's packages cannot be installed or the module cannot be built.
vmcheck: all
	$(Q)tools/install-deps vm || echo "vmcheck: cannot install the VM packages" >&2
	$(Q)$(MAKE) --no-print-directory kmod || echo "vmcheck: kgreen.ko did not build" >&2
	$(Q)prove --norc --timer --exec '' tools/dkmscheck tools/vmcheck :: \
		$(OUT)/tests $(KMOD_KOS)

# kgreen.ko's benchmarks in the VM (tools/vmbench): VMBENCH_ROUNDS=N.
vmbench: lib
	$(Q)tools/install-deps vm
	$(Q)$(MAKE) --no-print-directory kmod
	$(Q)$(MAKE) --no-print-directory -C tests/bench $(OUT)/bench/handoff \
		$(OUT)/bench/switch $(OUT)/bench/probecost $(OUT)/bench/slice
	$(Q)tools/vmbench $(KMOD_KO) $(OUT)/bench $(VMBENCH_ROUNDS)

# Install. The DKMS sources go to $(PREFIX)/src/kgreen-VERSION (with
# PREFIX=/usr, where dkms looks: dkms install kgreen/VERSION).
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR)
PC_REQUIRES := liburcu-memb$(if $(filter y,$(BPF)), libbpf)
D := $(DESTDIR)

install: lib tools
	$(call msg,INSTALL,$(D)$(PREFIX))
	$(Q)install -d $(D)$(LIBDIR)/pkgconfig $(D)$(INCLUDEDIR) \
		$(D)$(PREFIX)/src/kgreen-$(VERSION)/include/uapi
	$(Q)install -m 644 $(LIBA) $(D)$(LIBDIR)/
	$(Q)install -m 755 $(LIBSO) $(D)$(LIBDIR)/
	$(Q)ln -sf $(notdir $(LIBSO)) $(D)$(LIBDIR)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(D)$(LIBDIR)/libkgreen.so
	$(Q)install -m 644 userlib/include/kgreen.h $(D)$(INCLUDEDIR)/
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
		-e 's|@REQUIRES@|$(PC_REQUIRES)|' userlib/kgreen.pc.in \
		> $(D)$(LIBDIR)/pkgconfig/kgreen.pc
	$(Q)install -m 644 kmod/kgreen.c kmod/Kbuild $(D)$(PREFIX)/src/kgreen-$(VERSION)/
	$(Q)sed 's/^PACKAGE_VERSION=.*/PACKAGE_VERSION="$(VERSION)"/' kmod/dkms.conf \
		> $(D)$(PREFIX)/src/kgreen-$(VERSION)/dkms.conf
	$(Q)install -m 644 kmod/include/uapi/kgreen.h \
		$(D)$(PREFIX)/src/kgreen-$(VERSION)/include/uapi/
	$(Q)install -d $(D)$(PREFIX)/share/kgreen \
		$(D)$(PREFIX)/share/gdb/auto-load$(LIBDIR)
	$(Q)install -m 644 tools/gdb/kgreen-gdb.py $(D)$(PREFIX)/share/kgreen/
	$(Q)install -m 644 tools/gdb/kgreen-gdb.py \
		$(D)$(PREFIX)/share/gdb/auto-load$(LIBDIR)/$(notdir $(LIBSO))-gdb.py
ifeq ($(BPF),y)
	$(Q)install -m 644 $(BPF_OUT)/kgreen.bpf.o $(D)$(PREFIX)/share/kgreen/
	$(Q)install -d $(D)$(PREFIX)/bin
	$(Q)install -m 755 $(TRACE) $(D)$(PREFIX)/bin/
endif

deps:
	$(Q)tools/install-deps build $(if $(filter x86_64,$(KG_ARCH)),bpf)

# The test command: every suite under prove; its summary is printed last.
check: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory -C tests run_tests \
		EXTRA_CFLAGS="$(SAN_FLAGS) $(OPT)" EXTRA_LDFLAGS="$(SAN_FLAGS)"
ifeq ($(KG_ARCH)-$(SAN),x86_64-)
	$(Q)$(MAKE) --no-print-directory vmcheck
endif

# The aarch64 context switch, cross-built and run under qemu-user. The
# suites run scaled down (emulation is slow); scripts are not run. The
# runtime loader and libc are Debian's arm64 multiarch ones (-L /, which
# liburcu-dev:arm64 brings in): mixing them with the cross toolchain's
# copies under /usr/aarch64-linux-gnu hangs forked children.
AARCH64_OUT := $(SRCDIR)/.output/aarch64
check-aarch64:
	$(Q)tools/install-deps build cross
	$(Q)$(MAKE) --no-print-directory all \
		CC=aarch64-linux-gnu-gcc OUT=$(AARCH64_OUT)
	$(Q)$(MAKE) --no-print-directory -C tests run_tests \
		CC=aarch64-linux-gnu-gcc OUT=$(AARCH64_OUT) KG_TEST_SCALE=20 \
		CROSS_RUNNER="qemu-aarch64 -L /"

# The demo: Go's worker pool with blocking calls, once per backend.
demo: deps
	$(Q)$(MAKE) --no-print-directory lib examples
	$(Q)$(OUT)/examples/blocking_pool

# The same in the VM, with kgreen.ko loaded: the kmod row too.
vmdemo: lib examples
	$(Q)tools/install-deps vm
	$(Q)$(MAKE) --no-print-directory kmod
	$(Q)tools/vmtest -q -o $(OUT)/vmdemo.log -m $(KMOD_KO) \
		$(OUT)/examples/blocking_pool; \
		rc=$$?; sed -n '/^VMTEST-CMD-BEGIN/,/^VMTEST-CMD-END/p' \
		$(OUT)/vmdemo.log | sed '1d;$$d' | grep -v '^\[ *[0-9]'; exit $$rc

bench:
	$(Q)tools/install-deps build bench $(if $(filter x86_64,$(KG_ARCH)),bpf)
	$(Q)$(MAKE) --no-print-directory lib
	$(Q)$(MAKE) --no-print-directory -C tests/bench run

clean:
	$(call msg,CLEAN,.output)
	$(Q)rm -rf $(SRCDIR)/.output

help:
	@sed -n '3,14p' Makefile
