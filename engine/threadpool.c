/* threadpool.c — fixed worker threads for the data-parallel loops of the forward pass
 * (see threadpool.h for why). One loop at a time: the caller publishes (fn, arg, ntasks),
 * bumps a generation number and wakes the workers; everybody, the caller included, takes
 * task indices from an atomic counter until none are left; the caller waits until every
 * worker has finished its last task. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct threadpool {
	int nthreads; /* caller included */
	pthread_t *workers;
	pthread_mutex_t mu;
	pthread_cond_t wake;  /* a new loop (or shutdown) was published */
	pthread_cond_t done;  /* the last busy worker finished */
	unsigned long generation;
	int busy;             /* workers still inside the current loop */
	int shutdown;
	void (*fn)(void *, int);
	void *arg;
	int ntasks;
	atomic_int next;
};

static void run_tasks(threadpool *p)
{
	for (;;) {
		int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
		if (i >= p->ntasks)
			break;
		p->fn(p->arg, i);
	}
}

static void *worker_main(void *vp)
{
	threadpool *p = vp;
	unsigned long seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->generation == seen && !p->shutdown)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->shutdown)
			break;
		seen = p->generation;
		pthread_mutex_unlock(&p->mu);
		run_tasks(p);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
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
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = ntasks;
	atomic_store(&p->next, 0);
	p->busy = p->nthreads - 1;
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);

	run_tasks(p);

	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void threadpool_destroy(threadpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->shutdown = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads - 1; i++)
		pthread_join(p->workers[i], NULL);
	free(p->workers);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	free(p);
}
