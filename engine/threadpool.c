/* threadpool.c — fixed worker threads for the data-parallel loops of the forward pass
 * (see threadpool.h for why). One loop at a time: the caller publishes (fn, arg, ntasks)
 * and bumps a generation number; everybody, the caller included, claims task indices until
 * none are left; the caller returns when every task has completed.
 *
 * Hand-offs spin before they sleep. A 20-token query runs ~24 loops in 1-5 ms, so a loop's
 * hand-off must cost a microsecond or two, not the 20-50 us of a futex wake and a wake-up
 * (at 2 threads that made an int8 query slower than at 1: docs/bench-cpu.md). So a worker
 * that has finished a loop watches the generation for SPIN_NS before it sleeps on the
 * condition variable, and the caller watches the count of unfinished tasks for SPIN_NS
 * before it sleeps. Whoever publishes checks whether the other side went to sleep and only
 * then takes the mutex and signals. An idle pool still sleeps, SPIN_NS after its last loop.
 *
 * The caller waits for tasks, not for workers: a worker that has not woken up (on a loaded
 * machine it may not run for a whole time slice) claims nothing, and the caller runs its
 * share instead of waiting for it. Claims therefore carry the loop's generation: `claim`
 * holds the generation (high 32 bits) and the tasks left to hand out (low 32), and a worker
 * that wakes late finds either no tasks left or another generation there and claims
 * nothing. fn, arg and ntasks are read only after a successful claim, while the caller
 * cannot be publishing the next loop (the claimed task is not done).
 *
 * The sleep/wake race is the classic one: the sleeper announces itself (sleepers or
 * caller_sleeps, sequentially consistent) and re-checks the condition under the mutex; the
 * publisher changes the condition (sequentially consistent) and then reads the
 * announcement. In the single total order of those four operations, either the sleeper's
 * re-check sees the change or the publisher sees the announcement and signals under the
 * mutex, after which the sleeper, waiting or about to re-check under that mutex, wakes. */
#include "threadpool.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* How long a side spins before sleeping: longer than the serial work between two loops of
 * a short query (attention and LayerNorm of ~20 tokens, tens of microseconds), short enough
 * that an idle engine is asleep a fraction of a millisecond after its last loop. */
#define SPIN_NS 200000

struct threadpool {
	int nthreads; /* caller included */
	pthread_t *workers;
	pthread_mutex_t mu;
	pthread_cond_t wake;  /* a new loop (or shutdown) was published */
	pthread_cond_t done;  /* a worker completed the loop's last task */
	atomic_ulong generation;
	atomic_ullong claim;      /* generation << 32 | tasks not yet handed out */
	atomic_int pending;       /* tasks of the current loop not yet completed */
	atomic_int sleepers;      /* workers asleep (or about to be) on `wake` */
	atomic_int caller_sleeps; /* the caller asleep (or about to be) on `done` */
	atomic_int shutdown;
	void (*fn)(void *, int);
	void *arg;
	int ntasks;
};

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int new_loop(threadpool *p, unsigned long seen)
{
	return atomic_load_explicit(&p->generation, memory_order_acquire) != seen;
}

static int all_done(threadpool *p, unsigned long unused)
{
	(void)unused;
	return atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
}

/* Spins until ready(p, arg), for at most SPIN_NS; returns whether it became ready. The clock
 * is read every 64 pauses (a vDSO call, tens of nanoseconds). On a machine with more
 * runnable threads than CPUs the thread we wait for may not be running: yield the CPU to it
 * now and then rather than spin out a whole time slice. */
static inline int spin_until(int (*ready)(threadpool *, unsigned long), threadpool *p,
			     unsigned long arg)
{
	long long t0 = now_ns();
	for (unsigned i = 1;; i++) {
		if (ready(p, arg))
			return 1;
		_mm_pause();
		if ((i & 63) == 0) {
			if (now_ns() - t0 > SPIN_NS)
				return 0;
			if ((i & 1023) == 0)
				sched_yield();
		}
	}
}

/* Claims and runs tasks of generation `gen` until none are left; returns whether this
 * thread completed the loop's last task. */
static int run_tasks(threadpool *p, unsigned long gen)
{
	const unsigned long long g = (unsigned long long)(gen & 0xffffffffu) << 32;
	unsigned long long v = atomic_load_explicit(&p->claim, memory_order_acquire);
	int last = 0;
	for (;;) {
		if ((v & ~0xffffffffULL) != g || (v & 0xffffffffu) == 0)
			return last;
		if (!atomic_compare_exchange_weak_explicit(&p->claim, &v, v - 1,
							   memory_order_acquire,
							   memory_order_acquire))
			continue;
		int i = p->ntasks - (int)(v & 0xffffffffu);
		p->fn(p->arg, i);
		last = atomic_fetch_sub(&p->pending, 1) == 1; /* seq_cst: see caller_sleeps */
		v = atomic_load_explicit(&p->claim, memory_order_acquire);
	}
}

static void *worker_main(void *vp)
{
	threadpool *p = vp;
	unsigned long seen = 0;
	for (;;) {
		if (!spin_until(new_loop, p, seen)) {
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while (atomic_load(&p->generation) == seen)
				pthread_cond_wait(&p->wake, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
		}
		seen = atomic_load(&p->generation);
		if (atomic_load(&p->shutdown))
			break;
		if (run_tasks(p, seen) && atomic_load(&p->caller_sleeps)) {
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->done);
			pthread_mutex_unlock(&p->mu);
		}
	}
	return NULL;
}

/* Publishes a new generation (a loop, or shutdown) and wakes sleeping workers. */
static void publish(threadpool *p)
{
	atomic_fetch_add(&p->generation, 1);
	if (atomic_load(&p->sleepers)) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->wake);
		pthread_mutex_unlock(&p->mu);
	}
}

threadpool *threadpool_create(int threads)
{
	if (threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (int)n : 1;
	}
	threadpool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->nthreads = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	if (threads > 1) {
		p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
		if (!p->workers) {
			threadpool_destroy(p);
			return NULL;
		}
		for (int i = 0; i < threads - 1; i++) {
			if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
				threadpool_destroy(p);
				return NULL;
			}
			p->nthreads++;
		}
	}
	return p;
}

int threadpool_size(const threadpool *p)
{
	return p ? p->nthreads : 1;
}

void threadpool_run(threadpool *p, void (*fn)(void *arg, int task), void *arg, int ntasks)
{
	if (ntasks <= 0)
		return;
	if (!p || p->nthreads == 1 || ntasks == 1) {
		for (int i = 0; i < ntasks; i++)
			fn(arg, i);
		return;
	}
	/* no task of the last loop is running or will run (pending reached 0 and claim
	 * holds 0 tasks), so nothing reads these until the claim below is published */
	p->fn = fn;
	p->arg = arg;
	p->ntasks = ntasks;
	atomic_store_explicit(&p->pending, ntasks, memory_order_relaxed);
	unsigned long gen = atomic_load_explicit(&p->generation, memory_order_relaxed) + 1;
	atomic_store_explicit(&p->claim,
			      (unsigned long long)(gen & 0xffffffffu) << 32 | (unsigned)ntasks,
			      memory_order_release);
	publish(p);

	run_tasks(p, gen);

	if (!spin_until(all_done, p, 0)) {
		pthread_mutex_lock(&p->mu);
		atomic_store(&p->caller_sleeps, 1);
		while (atomic_load(&p->pending) > 0)
			pthread_cond_wait(&p->done, &p->mu);
		atomic_store(&p->caller_sleeps, 0);
		pthread_mutex_unlock(&p->mu);
	}
}

void threadpool_destroy(threadpool *p)
{
	if (!p)
		return;
	atomic_store(&p->shutdown, 1);
	publish(p);
	for (int i = 0; i < p->nthreads - 1; i++)
		pthread_join(p->workers[i], NULL);
	free(p->workers);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	free(p);
}
