/* test_threadpool — the pool's contract (threadpool.h): every task of a loop runs exactly
 * once, and its writes are visible to the caller when threadpool_run returns, across the
 * ways a hand-off can go since the pool spins before it sleeps (threadpool.c): loops back to
 * back (workers still spinning), loops after a pause longer than the spin (workers asleep),
 * tasks longer than the spin (the caller asleep), a worker that wakes after the caller has
 * done every task itself, and loops of 0, 1 and many tasks. Sizes 1-8 threads, more threads
 * than CPUs included. A lost wake-up hangs the test (the suite's timeout catches it); a
 * task run twice or not at all, or a stale write, fails a CHECK. */
#include "threadpool.h"

#include "testutil.h"

#include <stdatomic.h>
#include <time.h>

enum { MAXT = 512 };

typedef struct job {
	atomic_int runs[MAXT]; /* per task: how many times it ran */
	int value[MAXT];       /* per task: a plain write the caller must see */
	int round;
	long sleep_us;         /* tasks sleep this long (0: none) */
	int sleepy_task;       /* only this task sleeps (-1: every task) */
} job;

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

static void task(void *arg, int i)
{
	job *j = arg;
	atomic_fetch_add_explicit(&j->runs[i], 1, memory_order_relaxed);
	j->value[i] = j->round * 1000 + i;
	if (j->sleep_us && (j->sleepy_task < 0 || j->sleepy_task == i))
		sleep_us(j->sleep_us);
}

static void one_loop(threadpool *p, job *j, int ntasks, const char *what)
{
	for (int i = 0; i < ntasks; i++) {
		atomic_store(&j->runs[i], 0);
		j->value[i] = -1;
	}
	threadpool_run(p, task, j, ntasks);
	int bad = 0;
	for (int i = 0; i < ntasks && bad < 3; i++) {
		int r = atomic_load(&j->runs[i]);
		if (r != 1 || j->value[i] != j->round * 1000 + i) {
			bad++;
			CHECK(0, "%s, %d threads, round %d: task %d of %d ran %d times, value %d",
			      what, threadpool_size(p), j->round, i, ntasks, r, j->value[i]);
		}
	}
	j->round++;
}

int main(void)
{
	static job j;
	unsigned seed = 12345;
	CHECK(threadpool_size(NULL) == 1, "NULL pool size %d", threadpool_size(NULL));
	j.sleepy_task = -1;
	one_loop(NULL, &j, 7, "NULL pool");
	const int sizes[] = { 1, 2, 3, 4, 8 };
	for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
		threadpool *p = threadpool_create(sizes[s]);
		CHECK(p && threadpool_size(p) == sizes[s], "create(%d)", sizes[s]);
		if (!p)
			continue;
		j.sleep_us = 0, j.sleepy_task = -1;
		/* back to back, random sizes 0..MAXT (0 and 1 included) */
		for (int r = 0; r < 3000; r++) {
			seed = seed * 1103515245u + 12345u;
			int n = (int)((seed >> 8) % 70);
			if (r % 100 == 0)
				n = MAXT;
			one_loop(p, &j, n, "back to back");
		}
		/* workers asleep before each loop: pause longer than the spin (200 us) */
		for (int r = 0; r < 20; r++) {
			sleep_us(1000);
			one_loop(p, &j, 1 + r % 5, "after a pause");
		}
		/* one task longer than the spin: the caller sleeps waiting for it, or runs it */
		j.sleep_us = 2000;
		for (int r = 0; r < 10; r++) {
			j.sleepy_task = r % 3;
			one_loop(p, &j, 3, "one long task");
		}
		/* every task long: all threads busy, wake-ups of sleeping callers */
		j.sleepy_task = -1, j.sleep_us = 300;
		for (int r = 0; r < 10; r++)
			one_loop(p, &j, 2 * sizes[s] + 1, "long tasks");
		j.sleep_us = 0;
		/* short loops right after a pause, many times: late workers meet finished loops */
		for (int r = 0; r < 200; r++) {
			if (r % 10 == 0)
				sleep_us(400);
			one_loop(p, &j, 2, "late workers");
		}
		threadpool_destroy(p);
	}
	/* create and destroy at once, workers possibly not started yet */
	for (int r = 0; r < 50; r++)
		threadpool_destroy(threadpool_create(1 + r % 4));
	threadpool_destroy(NULL);
	if (test_failures) {
		fprintf(stderr, "%d failures\n", test_failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
