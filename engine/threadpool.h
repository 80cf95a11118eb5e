/* threadpool.h — a fixed set of worker threads for data-parallel loops.
 *
 * The forward pass runs a dozen parallel loops per layer; creating threads for each would
 * cost more than the work. Between loops a worker spins for up to 200 us (a short query's
 * next loop comes within microseconds) and then sleeps on a condition variable, so an idle
 * engine uses no CPU a fraction of a millisecond after its last loop. The calling thread
 * takes part in every loop and never waits for a worker that has not claimed a task.
 */
#ifndef EMB_THREADPOOL_H
#define EMB_THREADPOOL_H

typedef struct threadpool threadpool;

/* Creates a pool in which `threads` threads (the caller included) run each loop; threads <= 0
 * means the number of online CPUs. Returns NULL when out of memory or threads can't start. */
threadpool *threadpool_create(int threads);

/* Number of threads that run a loop, the caller included. A NULL pool has 1. */
int threadpool_size(const threadpool *p);

/* Calls fn(arg, i) for every i in [0, ntasks), spread over the pool's threads, and returns
 * when all calls have returned (their writes visible to the caller). Tasks are handed out
 * in order, one at a time, so uneven tasks balance. Not reentrant: one loop at a time per
 * pool (callers serialise). A NULL pool runs every task on the calling thread. */
void threadpool_run(threadpool *p, void (*fn)(void *arg, int task), void *arg, int ntasks);

/* Stops and joins the workers and frees the pool. NULL is allowed. */
void threadpool_destroy(threadpool *p);

#endif
