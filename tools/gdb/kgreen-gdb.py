# SPDX-License-Identifier: MIT
#
# kgreen-gdb.py - gdb commands for kgreen programs (Documentation/gdb.md).
#
#   info coroutines          every live coroutine: id, name, state, where
#                            it is parked (or which worker runs it), entry
#   coroutine N CMD...       run a gdb command (bt, info frame, ...) in
#                            parked coroutine N's context
#
# gdb loads it by itself for programs linked with libkgreen.so when it is
# installed in gdb's auto-load directory (make install puts it there), or
# by hand: `source /usr/local/share/kgreen/kgreen-gdb.py`. It reads the
# runtime's memory only (works on core files too, except `coroutine N`,
# which sets registers and so needs a live process). x86-64.

import gdb

STATES = {1: "runnable", 2: "running", 3: "waiting", 4: "dead"}
# callee-saved registers in a switched-out frame (switch_x86_64.S):
# [sp+8] r15 [sp+16] r14 [sp+24] r13 [sp+32] r12 [sp+40] rbx [sp+48] rbp
# [sp+56] return address; the frame is 64 bytes.
SAVED = (("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32), ("rbx", 40),
         ("rbp", 48))


def _sym(name):
    """A static or global variable of libkgreen, or None."""
    try:
        sym = gdb.lookup_static_symbol(name)
    except AttributeError:
        sym = None
    if sym is None:
        sym = gdb.lookup_global_symbol(name)
    if sym is None:
        try:
            return gdb.parse_and_eval(name)
        except gdb.error:
            return None
    return sym.value()


def runtime():
    rt = _sym("cur_rt")
    if rt is None:
        raise gdb.GdbError("kgreen: no libkgreen debug information here "
                           "(is the program linked with libkgreen, built "
                           "with -g?)")
    if int(rt) == 0:
        raise gdb.GdbError("kgreen: no runtime is running (kg_run has not "
                           "started, or has returned)")
    return rt


def coroutines(rt):
    """Every live coroutine, as kg_co_foreach finds them: the top of each
    carved stack of every slab."""
    lay = _sym("kg_gdb_layout")
    if lay is None:
        raise gdb.GdbError("kgreen: kg_gdb_layout not found")
    guard = int(lay["guard_size"])
    shift = int(lay["class_min_shift"])
    line = int(lay["cacheline"])
    co_size = int(lay["co_size"])
    co_ptr = gdb.lookup_type("struct kg_co").pointer()
    out = []
    slab = rt["stacks"]["slabs"]
    while int(slab):
        base = int(slab["base"])
        slot = guard + (1 << (int(slab["size_class"]) + shift))
        for i in range(int(slab["carved"])):
            hi = base + i * slot + slot
            addr = (hi - co_size) & ~(line - 1)
            co = gdb.Value(addr).cast(co_ptr).dereference()
            state = int(co["state"])
            if int(co["id"]) and state != 4:
                out.append(co)
        slab = slab["next"]
    out.sort(key=lambda c: int(c["id"]))
    return out


def running_on(rt):
    """coroutine address -> "worker I (gdb thread N)", for the running
    ones."""
    on = {}
    inf = gdb.selected_inferior()
    for i in range(int(rt["nworkers"])):
        w = rt["workers"][i]
        if not int(w):
            continue
        where = "worker %d" % i
        try:
            t = inf.thread_from_handle(w["thread"])
            if t is not None:
                where += " (gdb thread %d)" % t.num
        except (gdb.error, AttributeError, TypeError, ValueError):
            pass
        slot = w["slot"].dereference()
        if int(slot["proc"]) == 0xFFFFFFFF:
            # the kernel side or sysmon took its proc; the worker learns
            # it at its coroutine's next kgreen call (handoff.c)
            if int(slot["preempts"]) != int(w["preempts_seen"]):
                where += ", preempted: off its proc after a time slice"
            else:
                where += ", off its proc (taken while it blocked)"
        on[int(w["cur"])] = where
    return on


def _cstr(v):
    try:
        return v.string()
    except gdb.error:
        return "?"


def describe(co, on):
    state = int(co["state"])
    if state == 3:
        reason = co["wait_reason"]
        where = _cstr(reason) if int(reason) else "waiting"
        if where.startswith("fd "):
            # kg_fd_wait: the object is the descriptor's number
            where += " %d" % int(co["wait_obj"])
        elif int(co["wait_obj"]):
            where += " %#x" % int(co["wait_obj"])
    elif state == 2:
        w = on.get(int(co.address))
        where = "on " + w if w is not None else "on a worker"
    else:
        where = "queued"
    return where


def entry(co):
    fn = int(co["fn"])
    block = gdb.block_for_pc(fn) if fn else None
    if block is not None and block.function is not None:
        return block.function.print_name
    return "%#x" % fn


class InfoCoroutines(gdb.Command):
    """List the kgreen runtime's live coroutines: id, name, state, where
each waits (or which worker runs it), and its entry function."""

    def __init__(self):
        super().__init__("info coroutines", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        rt = runtime()
        on = running_on(rt)
        cos = coroutines(rt)
        print("%6s  %-16s %-9s %-34s %s" % ("Id", "Name", "State", "Where",
                                            "Entry"))
        for co in cos:
            name = _cstr(co["name"]) if int(co["name"][0]) else ""
            if int(co["is_main"]):
                name = name or "main"
            print("%6d  %-16s %-9s %-34s %s" % (
                int(co["id"]), name[:16], STATES.get(int(co["state"]), "?"),
                describe(co, on), entry(co)))
        print("%d coroutine%s" % (len(cos), "" if len(cos) == 1 else "s"))


class Coroutine(gdb.Command):
    """coroutine N CMD: run gdb command CMD (e.g. bt) with the registers of
parked coroutine N, then restore the thread's own. A running coroutine's
frames are its worker's: use `thread apply all bt`."""

    def __init__(self):
        super().__init__("coroutine", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        parts = arg.split(None, 1)
        if len(parts) < 2 or not parts[0].isdigit():
            raise gdb.GdbError("usage: coroutine N CMD (e.g. coroutine 3 bt)")
        want, cmd = int(parts[0]), parts[1]
        if gdb.selected_inferior().architecture().name() != "i386:x86-64":
            raise gdb.GdbError("coroutine N: x86-64 only")
        rt = runtime()
        co = next((c for c in coroutines(rt) if int(c["id"]) == want), None)
        if co is None:
            raise gdb.GdbError("no live coroutine %d (info coroutines)" % want)
        if int(co["state"]) == 2:
            w = running_on(rt).get(int(co.address))
            raise gdb.GdbError("coroutine %d is running%s: its frames are "
                               "its worker thread's (thread N, then bt)"
                               % (want, " on " + w if w is not None else ""))
        sp = int(co["sp"])
        u64 = gdb.lookup_type("unsigned long").pointer()

        def word(off):
            return int(gdb.Value(sp + off).cast(u64).dereference())

        new = {name: word(off) for name, off in SAVED}
        new["pc"] = word(56)
        new["sp"] = sp + 64
        gdb.execute("select-frame 0", to_string=True)
        frame = gdb.newest_frame()
        old = {name: int(frame.read_register(name)) for name in new}
        try:
            for name, v in new.items():
                gdb.execute("set $%s = %d" % (name, v), to_string=True)
            gdb.execute(cmd, from_tty)
        finally:
            # the innermost frame again, then the thread's own registers
            gdb.execute("select-frame 0", to_string=True)
            for name, v in old.items():
                gdb.execute("set $%s = %d" % (name, v), to_string=True)


InfoCoroutines()
Coroutine()
