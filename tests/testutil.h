/* testutil.h — the few helpers the C tests share: a CHECK macro that reports file:line and
 * counts failures, temporary directories, and writing files. Header-only: each test is one
 * program. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_failures;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			test_failures++;                                        \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__,  \
				__LINE__, #cond);                               \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
		}                                                               \
	} while (0)

/* The default model fetched by scripts/fetch-model (tests run from the repository root). */
static inline const char *test_model_dir(void)
{
	const char *e = getenv("EMBED_MODEL");
	return e && *e ? e : ".cache/models/all-MiniLM-L6-v2";
}

static inline int test_have_model(void)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/model.safetensors", test_model_dir());
	return access(p, R_OK) == 0;
}

/* Creates a fresh temporary directory; returns a static path buffer per call slot. */
static inline char *test_tmpdir(char buf[256])
{
	snprintf(buf, 256, "/tmp/embtest.XXXXXX");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		exit(1);
	}
	return buf;
}

static inline void test_write_file(const char *dir, const char *name, const void *data, size_t n)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "wb");
	if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
		perror(p);
		exit(1);
	}
}

static inline void test_rm_rf(const char *dir)
{
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

static inline int test_done(const char *name)
{
	if (test_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
		return 1;
	}
	printf("%s: all checks passed\n", name);
	return 0;
}

#endif
