/* SPDX-License-Identifier: MIT */
/*
 * harness.h - kselftest-style test harness for kgreen's suites.
 *
 * A suite is one C file:
 *
 *	#include "harness.h"
 *	TEST(name) { ASSERT_EQ(4, 2 + 2); }
 *	TEST_HARNESS_MAIN
 *
 * Tests:
 *   TEST(name)                    a test
 *   TEST_TIMEOUT(name, seconds)   a test with its own timeout
 *   TEST_SIGNAL(name, signo)      passes only if it dies by that signal
 *   FIXTURE(f) { fields };        per-test state, `self` in the bodies
 *   FIXTURE_SETUP(f) / FIXTURE_TEARDOWN(f) { ... }  (both required)
 *   FIXTURE_VARIANT(f) { fields };            parameters, `variant`
 *   FIXTURE_VARIANT_ADD(f, v) { .field = ... };  one instance each
 *   TEST_F(f, name) / TEST_F_TIMEOUT(f, name, seconds)
 *     runs once per variant, named f.variant.name (f.name without any)
 *
 * Checks, as (expected, seen); each operand is evaluated once and a
 * failure prints both values:
 *   ASSERT_EQ NE LT LE GT GE, ASSERT_TRUE FALSE NULL NONNULL, ASSERT_STREQ
 *   STRNE: on failure the test ends (failed);
 *   EXPECT_*: the same, but the test goes on (and fails at the end).
 *   Append TH_LOG("fmt", ...) to a check to print a line on failure only:
 *     ASSERT_EQ(0, err) TH_LOG("while opening %s", path);
 * TH_LOG alone prints a "# " diagnostic line.
 * SKIP(statement, "fmt", ...) marks the test skipped with that reason, then
 * runs statement (usually `return`).
 *
 * Running: every test runs in its own forked process (its own process
 * group), with a timeout (30 s default; KG_TEST_TIMEOUT=seconds for all,
 * KG_TEST_TIMEOUT_MULT=n to scale, as sanitizer builds do). Output is TAP 13;
 * exit status 0 all passed, 1 some failed, 4 all skipped. Options: -l lists
 * the tests, -r NAME runs only NAME (repeatable), -h helps.
 * harness_seed() is a random seed printed once ("# seed: N"); set
 * KG_TEST_SEED=N to replay a run.
 */
#ifndef KG_HARNESS_H
#define KG_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KSFT_PASS 0
#define KSFT_FAIL 1
#define KSFT_SKIP 4

struct __test_metadata;
struct __fixture_variant_metadata;

/* One registered test (a TEST, or a TEST_F for one variant). */
struct __test_metadata {
	const char *name;		/* test name */
	const char *fixture;		/* NULL for a plain TEST */
	void (*fn)(struct __test_metadata *,
		   struct __fixture_variant_metadata *);
	int termsig;			/* TEST_SIGNAL: expected signal */
	int timeout;			/* seconds */
	struct __test_metadata *next;
	/* in the child, during the run */
	int failed;
	int skipped;
	int trigger;			/* a check just failed */
};

struct __fixture_variant_metadata {
	const char *name;
	const void *data;
	struct __fixture_variant_metadata *next;
};

struct __fixture_metadata {
	const char *name;
	struct __fixture_variant_metadata *variants, **vtail;
	struct __test_metadata *tests, **ttail;
	struct __fixture_metadata *next;
};

/* Registration lists, in declaration order. */
static struct __test_metadata *__plain_tests, **__plain_tail = &__plain_tests;
static struct __fixture_metadata *__fixtures, **__fixtures_tail = &__fixtures;
static struct __test_metadata *__current_test;

/* A page shared with each test child: the skip reason travels back in it. */
struct __harness_shared {
	char skip_reason[1024];
};
static struct __harness_shared *__harness_shm;

static inline void __register_test(struct __test_metadata *t)
{
	*__plain_tail = t;
	__plain_tail = &t->next;
}

static inline void __register_fixture(struct __fixture_metadata *f)
{
	*__fixtures_tail = f;
	__fixtures_tail = &f->next;
}

static inline void __fixture_add_test(struct __fixture_metadata *f,
				      struct __test_metadata *t)
{
	if (!f->ttail)
		f->ttail = &f->tests;
	*f->ttail = t;
	f->ttail = &t->next;
}

static inline void __fixture_add_variant(struct __fixture_metadata *f,
					 struct __fixture_variant_metadata *v)
{
	if (!f->vtail)
		f->vtail = &f->variants;
	*f->vtail = v;
	f->vtail = &v->next;
}

/* ---------------------------------------------------------------- */
/* Declaring tests                                                   */
/* ---------------------------------------------------------------- */

#define __TEST_IMPL(test_name, signo, secs)                                   \
	static void test_name(struct __test_metadata *_metadata);            \
	static void __wrap_##test_name(struct __test_metadata *_metadata,     \
				       struct __fixture_variant_metadata *v)  \
	{                                                                     \
		(void)v;                                                      \
		test_name(_metadata);                                         \
	}                                                                     \
	static struct __test_metadata __meta_##test_name = {                  \
		.name = #test_name,                                           \
		.fn = __wrap_##test_name,                                     \
		.termsig = signo,                                             \
		.timeout = secs,                                              \
	};                                                                    \
	__attribute__((constructor)) static void __reg_##test_name(void)      \
	{                                                                     \
		__register_test(&__meta_##test_name);                         \
	}                                                                     \
	static void test_name(struct __test_metadata __attribute__((unused))  \
			      * _metadata)

#define TEST(name) __TEST_IMPL(name, 0, 30)
#define TEST_TIMEOUT(name, secs) __TEST_IMPL(name, 0, secs)
#define TEST_SIGNAL(name, signo) __TEST_IMPL(name, signo, 30)

#define FIXTURE_DATA(f) struct __fixture_data_##f

#define FIXTURE(f)                                                            \
	static struct __fixture_metadata __fixture_##f = { .name = #f };      \
	__attribute__((constructor)) static void __reg_fixture_##f(void)      \
	{                                                                     \
		__register_fixture(&__fixture_##f);                           \
	}                                                                     \
	FIXTURE_DATA(f)

#define FIXTURE_VARIANT(f) struct __fixture_variant_##f

#define FIXTURE_VARIANT_ADD(f, v)                                             \
	static const struct __fixture_variant_##f __variant_data_##f##_##v;   \
	static struct __fixture_variant_metadata __variant_##f##_##v = {      \
		.name = #v,                                                   \
		.data = &__variant_data_##f##_##v,                            \
	};                                                                    \
	__attribute__((constructor)) static void __reg_variant_##f##_##v(void) \
	{                                                                     \
		__fixture_add_variant(&__fixture_##f, &__variant_##f##_##v);  \
	}                                                                     \
	static const struct __fixture_variant_##f __variant_data_##f##_##v =

/* Every fixture declares a FIXTURE_VARIANT (it may have no fields). */
#define __UNUSED __attribute__((unused))
#define FIXTURE_SETUP(f)                                                      \
	static void __setup_##f(struct __test_metadata __UNUSED *_metadata,  \
				FIXTURE_DATA(f) __UNUSED *self,               \
				const FIXTURE_VARIANT(f) __UNUSED *variant)

#define FIXTURE_TEARDOWN(f)                                                   \
	static void __teardown_##f(struct __test_metadata __UNUSED *_metadata, \
				   FIXTURE_DATA(f) __UNUSED *self,            \
				   const FIXTURE_VARIANT(f) __UNUSED *variant)

#define __TEST_F_IMPL(f, test_name, secs)                                     \
	static void __test_##f##_##test_name(                                 \
		struct __test_metadata *_metadata, FIXTURE_DATA(f) *self,     \
		const FIXTURE_VARIANT(f) *variant);                           \
	static void __wrap_##f##_##test_name(                                 \
		struct __test_metadata *_metadata,                            \
		struct __fixture_variant_metadata *v)                         \
	{                                                                     \
		FIXTURE_DATA(f) self;                                         \
		const FIXTURE_VARIANT(f) *variant = v ? v->data : NULL;       \
		memset(&self, 0, sizeof(self));                               \
		__setup_##f(_metadata, &self, variant);                       \
		if (!_metadata->failed && !_metadata->skipped)                \
			__test_##f##_##test_name(_metadata, &self, variant);  \
		__teardown_##f(_metadata, &self, variant);                    \
	}                                                                     \
	static struct __test_metadata __meta_##f##_##test_name = {            \
		.name = #test_name,                                           \
		.fixture = #f,                                                \
		.fn = __wrap_##f##_##test_name,                               \
		.timeout = secs,                                              \
	};                                                                    \
	__attribute__((constructor)) static void __reg_##f##_##test_name(void) \
	{                                                                     \
		__fixture_add_test(&__fixture_##f,                            \
				   &__meta_##f##_##test_name);                \
	}                                                                     \
	static void __test_##f##_##test_name(                                 \
		struct __test_metadata __attribute__((unused)) * _metadata,   \
		FIXTURE_DATA(f) __attribute__((unused)) * self,               \
		const FIXTURE_VARIANT(f) __attribute__((unused)) * variant)

#define TEST_F(f, name) __TEST_F_IMPL(f, name, 30)
#define TEST_F_TIMEOUT(f, name, secs) __TEST_F_IMPL(f, name, secs)

/* ---------------------------------------------------------------- */
/* Checks                                                            */
/* ---------------------------------------------------------------- */

#define TH_LOG(fmt, ...)                                                      \
	fprintf(stderr, "# %s:%d:%s: " fmt "\n", __FILE__, __LINE__,         \
		__current_test ? __current_test->name : "", ##__VA_ARGS__)

/*
 * After a failed check, the statement that follows it (an optional
 * TH_LOG, or just the `;`) runs once as the body of this loop; then an
 * ASSERT ends the test, an EXPECT lets it go on.
 */
#define __OPTIONAL_HANDLER(is_assert)                                         \
	for (; _metadata->trigger;                                            \
	     _metadata->trigger = __harness_bail(is_assert))

static inline int __harness_bail(int is_assert)
{
	if (is_assert) {
		fflush(stdout);
		fflush(stderr);
		_exit(KSFT_FAIL);
	}
	return 0;
}

#define __IS_SIGNED(x) ((__typeof__(x))-1 < (__typeof__(x))1)

static inline void __harness_fail_int(struct __test_metadata *t,
				      const char *file, int line,
				      const char *etext, const char *op,
				      const char *stext, int esigned,
				      unsigned long long e, int ssigned,
				      unsigned long long s)
{
	char eb[32], sb[32];

	snprintf(eb, sizeof(eb), esigned ? "%lld" : "%llu", e);
	snprintf(sb, sizeof(sb), ssigned ? "%lld" : "%llu", s);
	fprintf(stderr, "# %s:%d:%s: Expected %s (%s) %s %s (%s)\n", file,
		line, t->name, etext, eb, op, stext, sb);
	t->failed = 1;
	t->trigger = 1;
}

static inline void __harness_fail_msg(struct __test_metadata *t,
				      const char *file, int line,
				      const char *text)
{
	fprintf(stderr, "# %s:%d:%s: Expected %s\n", file, line, t->name,
		text);
	t->failed = 1;
	t->trigger = 1;
}

#define __CHECK_INT(expected, seen, op, is_assert)                            \
	do {                                                                  \
		__auto_type __exp = (expected);                               \
		__auto_type __seen = (seen);                                  \
		if (!(__exp op __seen))                                       \
			__harness_fail_int(                                   \
				_metadata, __FILE__, __LINE__, #expected,     \
				#op, #seen, __IS_SIGNED(__exp),               \
				(unsigned long long)__exp,                    \
				__IS_SIGNED(__seen),                          \
				(unsigned long long)__seen);                  \
	} while (0);                                                          \
	__OPTIONAL_HANDLER(is_assert)

#define __CHECK_BOOL(cond, text, is_assert)                                   \
	do {                                                                  \
		if (!(cond))                                                  \
			__harness_fail_msg(_metadata, __FILE__, __LINE__,     \
					   text);                             \
	} while (0);                                                          \
	__OPTIONAL_HANDLER(is_assert)

#define __CHECK_STR(expected, seen, want_eq, is_assert)                       \
	do {                                                                  \
		const char *__e = (expected), *__s = (seen);                  \
		if ((__e && __s && !strcmp(__e, __s)) != (want_eq)) {         \
			fprintf(stderr,                                       \
				"# %s:%d:%s: Expected %s (\"%s\") %s %s "     \
				"(\"%s\")\n",                                 \
				__FILE__, __LINE__, _metadata->name,          \
				#expected, __e ? __e : "(null)",              \
				(want_eq) ? "==" : "!=", #seen,               \
				__s ? __s : "(null)");                        \
			_metadata->failed = 1;                                \
			_metadata->trigger = 1;                               \
		}                                                             \
	} while (0);                                                          \
	__OPTIONAL_HANDLER(is_assert)

#define ASSERT_EQ(e, s) __CHECK_INT(e, s, ==, 1)
#define ASSERT_NE(e, s) __CHECK_INT(e, s, !=, 1)
#define ASSERT_LT(e, s) __CHECK_INT(e, s, <, 1)
#define ASSERT_LE(e, s) __CHECK_INT(e, s, <=, 1)
#define ASSERT_GT(e, s) __CHECK_INT(e, s, >, 1)
#define ASSERT_GE(e, s) __CHECK_INT(e, s, >=, 1)
#define EXPECT_EQ(e, s) __CHECK_INT(e, s, ==, 0)
#define EXPECT_NE(e, s) __CHECK_INT(e, s, !=, 0)
#define EXPECT_LT(e, s) __CHECK_INT(e, s, <, 0)
#define EXPECT_LE(e, s) __CHECK_INT(e, s, <=, 0)
#define EXPECT_GT(e, s) __CHECK_INT(e, s, >, 0)
#define EXPECT_GE(e, s) __CHECK_INT(e, s, >=, 0)
#define ASSERT_TRUE(c) __CHECK_BOOL(c, #c " to be true", 1)
#define ASSERT_FALSE(c) __CHECK_BOOL(!(c), #c " to be false", 1)
#define ASSERT_NULL(p) __CHECK_BOOL((p) == NULL, #p " to be NULL", 1)
#define ASSERT_NONNULL(p) __CHECK_BOOL((p) != NULL, #p " not to be NULL", 1)
#define EXPECT_TRUE(c) __CHECK_BOOL(c, #c " to be true", 0)
#define EXPECT_FALSE(c) __CHECK_BOOL(!(c), #c " to be false", 0)
#define EXPECT_NULL(p) __CHECK_BOOL((p) == NULL, #p " to be NULL", 0)
#define EXPECT_NONNULL(p) __CHECK_BOOL((p) != NULL, #p " not to be NULL", 0)
#define ASSERT_STREQ(e, s) __CHECK_STR(e, s, 1, 1)
#define ASSERT_STRNE(e, s) __CHECK_STR(e, s, 0, 1)
#define EXPECT_STREQ(e, s) __CHECK_STR(e, s, 1, 0)
#define EXPECT_STRNE(e, s) __CHECK_STR(e, s, 0, 0)

#define SKIP(statement, fmt, ...)                                             \
	do {                                                                  \
		snprintf(__harness_shm->skip_reason,                          \
			 sizeof(__harness_shm->skip_reason), fmt,             \
			 ##__VA_ARGS__);                                      \
		_metadata->skipped = 1;                                       \
		statement;                                                    \
	} while (0)

/* ---------------------------------------------------------------- */
/* Running                                                           */
/* ---------------------------------------------------------------- */

static inline unsigned int harness_seed(void)
{
	static unsigned int seed;
	static int printed;

	if (!printed) {
		const char *s = getenv("KG_TEST_SEED");

		seed = s ? (unsigned int)strtoul(s, NULL, 0)
			 : (unsigned int)(time(NULL) ^ getpid());
		fprintf(stderr, "# seed: %u (KG_TEST_SEED=%u replays it)\n",
			seed, seed);
		printed = 1;
	}
	return seed;
}

static inline int __harness_timeout(const struct __test_metadata *t)
{
	const char *all = getenv("KG_TEST_TIMEOUT");
	const char *mult = getenv("KG_TEST_TIMEOUT_MULT");
	int secs = t->timeout;

	if (all && atoi(all) > 0)
		secs = atoi(all);
	if (mult && atoi(mult) > 0)
		secs *= atoi(mult);
	return secs;
}

struct __harness_run {
	struct __test_metadata *t;
	struct __fixture_variant_metadata *v;
	char full[256];
};

/* Run one test in a child; print its TAP line; return KSFT_*. */
static inline int __harness_run_one(struct __harness_run *r, int num)
{
	struct __test_metadata *t = r->t;
	int status = 0, ret, secs = __harness_timeout(t), pfd;
	pid_t pid;
	bool timed_out = false;

	printf("#  RUN           %s ...\n", r->full);
	fflush(stdout);
	fflush(stderr);
	__harness_shm->skip_reason[0] = 0;
	pid = fork();
	if (pid < 0) {
		printf("# %s: fork: %s\n", r->full, strerror(errno));
		printf("not ok %d %s\n", num, r->full);
		return KSFT_FAIL;
	}
	if (pid == 0) {
		setpgid(0, 0);
		__current_test = t;
		t->failed = t->skipped = 0;
		t->fn(t, r->v);
		fflush(stdout);
		fflush(stderr);
		_exit(t->failed ? KSFT_FAIL : t->skipped ? KSFT_SKIP : KSFT_PASS);
	}
	setpgid(pid, pid);
	pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pfd >= 0) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		int n;

		do
			n = poll(&p, 1, secs * 1000);
		while (n < 0 && errno == EINTR);
		if (n == 0) {
			timed_out = true;
			kill(-pid, SIGKILL);
		}
		close(pfd);
	} else {
		/* no pidfd (old kernel, emulators): poll the child's status */
		struct timespec slice = { 0, 2000000 };
		long waited_ms = 0;

		while (waitpid(pid, &status, WNOHANG) == 0) {
			if (waited_ms >= secs * 1000L) {
				timed_out = true;
				kill(-pid, SIGKILL);
				break;
			}
			nanosleep(&slice, NULL);
			waited_ms += 2;
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	kill(-pid, SIGKILL);	/* anything the test left behind */

	if (timed_out) {
		printf("# %s: Test terminated by timeout (%d s)\n", r->full, secs);
		ret = KSFT_FAIL;
	} else if (WIFSIGNALED(status)) {
		if (t->termsig && WTERMSIG(status) == t->termsig) {
			ret = KSFT_PASS;
		} else {
			printf("# %s: Test terminated unexpectedly by signal %d\n",
			       r->full, WTERMSIG(status));
			ret = KSFT_FAIL;
		}
	} else if (t->termsig && WIFEXITED(status) &&
		   WEXITSTATUS(status) == KSFT_SKIP) {
		ret = KSFT_SKIP;
	} else if (t->termsig) {
		printf("# %s: Test exited normally instead of by signal %d\n",
		       r->full, t->termsig);
		ret = KSFT_FAIL;
	} else {
		ret = WEXITSTATUS(status) == KSFT_PASS	 ? KSFT_PASS
		      : WEXITSTATUS(status) == KSFT_SKIP ? KSFT_SKIP
							 : KSFT_FAIL;
	}
	if (ret == KSFT_PASS) {
		printf("#            OK  %s\n", r->full);
		printf("ok %d %s\n", num, r->full);
	} else if (ret == KSFT_SKIP) {
		printf("#      SKIP      %s\n", __harness_shm->skip_reason);
		printf("ok %d %s # SKIP %s\n", num, r->full,
		       __harness_shm->skip_reason);
	} else {
		printf("#          FAIL  %s\n", r->full);
		printf("not ok %d %s\n", num, r->full);
	}
	fflush(stdout);
	return ret;
}

/* Expand the registered tests into runs (one per fixture variant). */
static inline int __harness_collect(struct __harness_run **out, int *ncases)
{
	struct __harness_run *runs = NULL;
	struct __test_metadata *t;
	struct __fixture_metadata *f;
	int n = 0, cap = 0;

	*ncases = 0;
#define __ADD_RUN(T, V, ...)                                                  \
	do {                                                                  \
		if (n == cap) {                                               \
			cap = cap ? cap * 2 : 64;                             \
			runs = realloc(runs, cap * sizeof(*runs));            \
			if (!runs)                                            \
				abort();                                      \
		}                                                             \
		runs[n].t = (T);                                              \
		runs[n].v = (V);                                              \
		snprintf(runs[n].full, sizeof(runs[n].full), __VA_ARGS__);    \
		n++;                                                          \
	} while (0)
	for (t = __plain_tests; t; t = t->next) {
		__ADD_RUN(t, NULL, "%s", t->name);
		(*ncases)++;
	}
	for (f = __fixtures; f; f = f->next) {
		struct __fixture_variant_metadata *v;

		(*ncases)++;
		for (t = f->tests; t; t = t->next) {
			if (!f->variants)
				__ADD_RUN(t, NULL, "%s.%s", f->name, t->name);
			for (v = f->variants; v; v = v->next)
				__ADD_RUN(t, v, "%s.%s.%s", f->name, v->name,
					  t->name);
		}
	}
#undef __ADD_RUN
	*out = runs;
	return n;
}

static inline int __test_harness_run(int argc, char **argv, const char **only,
				     bool **selp, struct __harness_run **runsp);

static inline int test_harness_run(int argc, char **argv)
{
	const char **only = calloc((size_t)argc + 1, sizeof(char *));
	struct __harness_run *runs = NULL;
	bool *sel = NULL;
	int ret;

	if (!only)
		return KSFT_FAIL;
	ret = __test_harness_run(argc, argv, only, &sel, &runs);
	free(only);
	free(sel);
	free(runs);
	return ret;
}

static inline int __test_harness_run(int argc, char **argv, const char **only,
				     bool **selp, struct __harness_run **runsp)
{
	struct __harness_run *runs;
	int nonly = 0, ncases, n, i, opt, num = 0, pass = 0, fail = 0,
	    skip = 0;
	bool *sel;

	n = __harness_collect(&runs, &ncases);
	*runsp = runs;
	while ((opt = getopt(argc, argv, "hlr:t:")) != -1) {
		switch (opt) {
		case 'l':
			for (i = 0; i < n; i++)
				printf("%s\n", runs[i].full);
			return KSFT_PASS;
		case 'r':
		case 't':
			only[nonly++] = optarg;
			break;
		default:
			fprintf(stderr,
				"usage: %s [-l] [-r TEST]...\n"
				"  -l       list tests\n"
				"  -r TEST  run only TEST (repeatable)\n",
				argv[0]);
			return opt == 'h' ? KSFT_PASS : KSFT_FAIL;
		}
	}
	sel = calloc((size_t)n + 1, sizeof(bool));
	*selp = sel;
	if (!sel)
		return KSFT_FAIL;
	for (i = 0; i < n; i++)
		sel[i] = nonly == 0;
	for (opt = 0; opt < nonly; opt++) {
		bool found = false;

		for (i = 0; i < n; i++) {
			if (!strcmp(runs[i].full, only[opt])) {
				sel[i] = found = true;
			}
		}
		if (!found) {
			fprintf(stderr, "%s: no test named '%s' (-l lists them)\n",
				argv[0], only[opt]);
			return KSFT_FAIL;
		}
	}
	for (i = 0; i < n; i++)
		num += sel[i];

	__harness_shm = mmap(NULL, sizeof(*__harness_shm),
			     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);
	if (__harness_shm == MAP_FAILED) {
		perror("mmap");
		return KSFT_FAIL;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	printf("1..%d\n", num);
	printf("# Starting %d tests from %d test cases.\n", num, ncases);
	for (i = 0, opt = 0; i < n; i++) {
		if (!sel[i])
			continue;
		switch (__harness_run_one(&runs[i], ++opt)) {
		case KSFT_PASS:
			pass++;
			break;
		case KSFT_SKIP:
			skip++;
			break;
		default:
			fail++;
		}
	}
	printf("# %s: %d / %d tests passed.\n", fail ? "FAILED" : "PASSED",
	       pass, num);
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:%d error:0\n",
	       pass, fail, skip);
	if (fail)
		return KSFT_FAIL;
	if (!pass && skip)
		return KSFT_SKIP;
	return KSFT_PASS;
}

#define TEST_HARNESS_MAIN                                                     \
	int main(int argc, char **argv)                                       \
	{                                                                     \
		return test_harness_run(argc, argv);                          \
	}

#endif /* KG_HARNESS_H */
