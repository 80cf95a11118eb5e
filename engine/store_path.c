/* store_path.c — the store's place on disk: aliases, the writer lock, leftovers of killed
 * runs, what may be written where, and the atomic swap of a rebuilt store (store_path.h).
 *
 * The probe that tells our store from anything else opens the environment with
 * MDB_RDONLY | MDB_NOLOCK: it needs no write access, leaves no lock.mdb behind in a
 * directory it then refuses, and holds its read transaction for a few lookups only. */
#include "store_path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Splits path into its directory ("." when none) and last component, ignoring trailing
 * slashes. */
static void split_path(const char *path, char *dir, char *base, size_t cap)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", path);
	size_t n = strlen(tmp);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = 0;
	char *slash = strrchr(tmp, '/');
	if (!slash) {
		snprintf(dir, cap, ".");
		snprintf(base, cap, "%s", tmp);
	} else {
		snprintf(base, cap, "%s", slash + 1);
		if (slash == tmp)
			snprintf(dir, cap, "/");
		else {
			*slash = 0;
			snprintf(dir, cap, "%s", tmp);
		}
	}
}

/* dir + "/" + name into out; -1 when it does not fit. */
static int join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int digits(const char *s, size_t n)
{
	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

enum { ENTRY_NONE, ENTRY_VERSION, ENTRY_SWAP, ENTRY_OLD };

/* Classifies a directory entry beside the store `base`: a versioned directory
 * .base.YYYYMMDDTHHMMSSZ.PID.N, a swap link .base.swap.PID or a moved-aside directory
 * .base.old.PID, with the PID that made it; ENTRY_NONE for anything else. */
static int parse_entry(const char *base, const char *name, long *pid)
{
	size_t bl = strlen(base);
	if (name[0] != '.' || strncmp(name + 1, base, bl) != 0 || name[1 + bl] != '.')
		return ENTRY_NONE;
	const char *r = name + bl + 2;
	size_t rl = strlen(r);
	if (rl > 5 && !strncmp(r, "swap.", 5) && digits(r + 5, rl - 5)) {
		*pid = atol(r + 5);
		return ENTRY_SWAP;
	}
	if (rl > 4 && !strncmp(r, "old.", 4) && digits(r + 4, rl - 4)) {
		*pid = atol(r + 4);
		return ENTRY_OLD;
	}
	/* YYYYMMDDTHHMMSSZ.PID.N */
	if (rl < 20 || !digits(r, 8) || r[8] != 'T' || !digits(r + 9, 6) || r[15] != 'Z' || r[16] != '.')
		return ENTRY_NONE;
	const char *p = r + 17, *dot = strchr(p, '.');
	if (!dot || !digits(p, (size_t)(dot - p)) || !digits(dot + 1, strlen(dot + 1)))
		return ENTRY_NONE;
	*pid = atol(p);
	return ENTRY_VERSION;
}

/* Whether process pid exists (EPERM: it does, owned by someone else). */
static int pid_alive(long pid)
{
	if (pid <= 0 || pid > INT_MAX)
		return 0;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int store_path_canon(const char *path, char *dir, char *base, size_t cap, emb_err *err)
{
	char cur[PATH_MAX];
	if (snprintf(cur, sizeof cur, "%s", path) >= (int)sizeof cur)
		return emb_errf(err, EMB_EIO, "store %.200s...: path too long", path);
	for (int hop = 0; hop < 40; hop++) {
		char d[PATH_MAX], b[PATH_MAX], rd[PATH_MAX], full[PATH_MAX];
		split_path(cur, d, b, sizeof d);
		if (!b[0] || !strcmp(b, ".") || !strcmp(b, "..")) {
			/* "x/.." names a directory, not an entry of one: take its real path. */
			if (!realpath(cur, rd))
				return emb_errf(err, EMB_EIO, "store %s: %s", path, strerror(errno));
			split_path(rd, d, b, sizeof d);
			if (!b[0])
				return emb_errf(err, EMB_EIO, "store %s: the root directory cannot be a store", path);
		}
		if (!realpath(d, rd))
			return emb_errf(err, EMB_EIO, "store %s: directory %s: %s", path, d, strerror(errno));
		if (join(full, sizeof full, rd, b) || strlen(rd) >= cap || strlen(b) >= cap)
			return emb_errf(err, EMB_EIO, "store %s: path too long", path);
		struct stat st;
		if (lstat(full, &st) != 0) {
			if (errno != ENOENT)
				return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, full, strerror(errno));
		} else if (S_ISLNK(st.st_mode)) {
			char t[PATH_MAX];
			ssize_t n = readlink(full, t, sizeof t - 1);
			if (n <= 0)
				return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, full, strerror(errno));
			t[n] = 0;
			long pid;
			if (!strchr(t, '/') && parse_entry(b, t, &pid) == ENTRY_VERSION)
				goto done; /* our own link */
			if (t[0] == '/')
				snprintf(cur, sizeof cur, "%s", t);
			else if (join(cur, sizeof cur, rd, t))
				return emb_errf(err, EMB_EIO, "store %s: path too long", path);
			continue;
		} else if (S_ISDIR(st.st_mode) && b[0] == '.') {
			/* A versioned directory named directly: the store is the link to it. */
			for (char *p = b + 2; *p; p++) {
				long pid;
				char name[PATH_MAX], lp[PATH_MAX], t[PATH_MAX];
				if (*p != '.')
					continue;
				snprintf(name, sizeof name, "%.*s", (int)(p - b - 1), b + 1);
				if (parse_entry(name, b, &pid) != ENTRY_VERSION || join(lp, sizeof lp, rd, name))
					continue;
				ssize_t n = readlink(lp, t, sizeof t - 1);
				if (n > 0 && (t[n] = 0, !strcmp(t, b))) {
					snprintf(b, sizeof b, "%s", name);
					break;
				}
			}
		}
	done:
		snprintf(dir, cap, "%s", rd);
		snprintf(base, cap, "%s", b);
		return EMB_OK;
	}
	return emb_errf(err, EMB_EIO, "store %s: too many levels of symbolic links", path);
}

/* The canonical store path as one string. */
static int canon_full(const char *path, char *rd, char *b, char *full, size_t cap, emb_err *err)
{
	int rc = store_path_canon(path, rd, b, cap, err);
	if (rc)
		return rc;
	if (join(full, cap, rd, b))
		return emb_errf(err, EMB_EIO, "store %s: path too long", path);
	return EMB_OK;
}

/* Looks into an LMDB environment without writing to it. */
static int probe_env(const char *path, const char *dir, store_path_kind *kind, emb_err *err)
{
	MDB_env *env;
	MDB_txn *txn = NULL;
	int rc = mdb_env_create(&env);
	if (rc)
		return emb_errf(err, EMB_ESTORE, "store %s: %s", path, mdb_strerror(rc));
	mdb_env_set_maxdbs(env, 8);
	rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
	if (!rc)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		mdb_env_close(env);
		if (rc == EACCES || rc == EPERM)
			return emb_errf(err, EMB_EIO, "store %s: %s/data.mdb: %s", path, dir, strerror(rc));
		if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
			return emb_errf(err, EMB_ESTORE,
					"store %s: %s/data.mdb is not an LMDB environment of ours (%s); refusing to write there",
					path, dir, mdb_strerror(rc));
		return emb_errf(err, EMB_ESTORE, "store %s: %s/data.mdb: %s", path, dir, mdb_strerror(rc));
	}
	MDB_dbi main_dbi, meta;
	MDB_stat ms;
	MDB_envinfo info;
	MDB_val k = {6, "format"}, v;
	const char *why = NULL;
	char data[PATH_MAX + 16];
	struct stat st;
	snprintf(data, sizeof data, "%s/data.mdb", dir);
	/* The tables are read through the map: a file shorter than its meta page says would
	 * fault (SIGBUS) instead of failing. */
	if ((rc = mdb_env_info(env, &info)) || (rc = mdb_env_stat(env, &ms)) || stat(data, &st) != 0) {
		why = rc ? mdb_strerror(rc) : strerror(errno);
	} else if ((uint64_t)st.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
		mdb_txn_abort(txn);
		mdb_env_close(env);
		return emb_errf(err, EMB_ESTORE, "store %s: %s is truncated (%lld bytes, its pages need %llu)",
				path, data, (long long)st.st_size,
				(unsigned long long)(info.me_last_pgno + 1) * ms.ms_psize);
	} else if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) || (rc = mdb_stat(txn, main_dbi, &ms)))
		why = mdb_strerror(rc);
	else if (ms.ms_entries == 0)
		*kind = STORE_PATH_EMPTY; /* no table at all: nothing anyone could lose */
	else if (mdb_dbi_open(txn, "meta", 0, &meta) != 0)
		why = "no 'meta' table";
	else if (mdb_get(txn, meta, &k, &v) != 0)
		why = "its 'meta' table has no 'format' key";
	else
		*kind = STORE_PATH_STORE;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	if (why)
		return emb_errf(err, EMB_ESTORE,
				"store %s: %s holds an LMDB environment that is not a vector store (%s); refusing to write there",
				path, dir, why);
	return EMB_OK;
}

int store_path_check(const char *path, store_path_kind *kind, emb_err *err)
{
	char rd[PATH_MAX], b[PATH_MAX], full[PATH_MAX];
	int rc = canon_full(path, rd, b, full, sizeof full, err);
	if (rc)
		return rc;
	struct stat st;
	if (lstat(full, &st) != 0) {
		if (errno != ENOENT)
			return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, full, strerror(errno));
		*kind = STORE_PATH_MISSING;
		return EMB_OK;
	}
	if (stat(full, &st) != 0) {
		if (errno == ENOENT)
			return emb_errf(err, EMB_ESTORE, "store %s: %s is a link to nothing", path, full);
		return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, full, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return emb_errf(err, EMB_ESTORE, "store %s: %s is %s, not a store directory", path, full,
				S_ISREG(st.st_mode) ? "a regular file" : "not a directory");
	DIR *dp = opendir(full);
	if (!dp)
		return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, full, strerror(errno));
	char other[NAME_MAX + 1] = "";
	int has_data = 0;
	off_t data_size = 0;
	struct dirent *de;
	while ((de = readdir(dp))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		if (!strcmp(n, "data.mdb")) {
			char p[PATH_MAX + 16];
			snprintf(p, sizeof p, "%s/data.mdb", full);
			has_data = 1;
			if (stat(p, &st) == 0)
				data_size = st.st_size;
		} else if (strcmp(n, "lock.mdb") && !other[0]) {
			snprintf(other, sizeof other, "%s", n);
		}
	}
	closedir(dp);
	if (other[0] && !has_data)
		return emb_errf(err, EMB_ESTORE,
				"store %s: %s is a directory holding other files ('%s'), not a store: give a new path or an empty directory",
				path, full, other);
	if (!has_data || data_size == 0) {
		*kind = STORE_PATH_EMPTY;
		return EMB_OK;
	}
	if ((rc = probe_env(path, full, kind, err)))
		return rc;
	if (*kind == STORE_PATH_EMPTY && other[0])
		return emb_errf(err, EMB_ESTORE,
				"store %s: %s is a directory holding other files ('%s'), not a store: give a new path or an empty directory",
				path, full, other);
	return EMB_OK;
}

/* ---- the writer lock ------------------------------------------------------------------*/

struct store_lock {
	int fd;
};

int store_lock_take(const char *path, store_lock **out, emb_err *err)
{
	*out = NULL;
	char rd[PATH_MAX], b[PATH_MAX], lp[PATH_MAX + 16];
	int rc = store_path_canon(path, rd, b, sizeof rd, err);
	if (rc)
		return rc;
	if (snprintf(lp, sizeof lp, "%s/.%s.lock", strcmp(rd, "/") ? rd : "", b) >= (int)sizeof lp)
		return emb_errf(err, EMB_EIO, "store %s: path too long", path);
	int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return emb_errf(err, EMB_EIO, "store %s: lock %s: %s", path, lp, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		close(fd);
		if (e == EWOULDBLOCK)
			return emb_errf(err, EMB_ESTORE, "store %s: another indexer is writing to this store (%s is locked)",
					path, lp);
		return emb_errf(err, EMB_EIO, "store %s: lock %s: %s", path, lp, strerror(e));
	}
	store_lock *l = malloc(sizeof *l);
	if (!l) {
		close(fd);
		return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", path);
	}
	l->fd = fd;
	*out = l;
	return EMB_OK;
}

void store_lock_release(store_lock *l)
{
	if (!l)
		return;
	close(l->fd); /* releases the flock */
	free(l);
}

/* ---- leftovers ------------------------------------------------------------------------*/

int store_remove_dir(const char *dir)
{
	/* A reader that is opening the directory right now may recreate lock.mdb: try twice. */
	char data[PATH_MAX], lock[PATH_MAX];
	if (snprintf(data, sizeof data, "%s/data.mdb", dir) >= (int)sizeof data ||
	    snprintf(lock, sizeof lock, "%s/lock.mdb", dir) >= (int)sizeof lock)
		return -1;
	for (int i = 0; i < 2; i++) {
		unlink(data);
		unlink(lock);
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
	}
	return -1;
}

int store_path_cleanup(const char *path, int *removed, emb_err *err)
{
	char rd[PATH_MAX], b[PATH_MAX], full[PATH_MAX], target[PATH_MAX] = "";
	int n = 0, rc = canon_full(path, rd, b, full, sizeof full, err);
	if (removed)
		*removed = 0;
	if (rc)
		return rc;
	struct stat st;
	int found = lstat(full, &st) == 0, missing = !found && errno == ENOENT;
	if (found && S_ISLNK(st.st_mode)) {
		ssize_t k = readlink(full, target, sizeof target - 1);
		target[k > 0 ? k : 0] = 0;
	}
	DIR *dp = opendir(rd);
	if (!dp)
		return emb_errf(err, EMB_EIO, "store %s: %s: %s", path, rd, strerror(errno));
	/* First pass: a store moved aside by a rebuild killed before it put the link in place
	 * goes back where it was. */
	struct dirent *de;
	while (missing && (de = readdir(dp))) {
		long pid;
		char p[PATH_MAX];
		if (parse_entry(b, de->d_name, &pid) != ENTRY_OLD || pid_alive(pid) ||
		    join(p, sizeof p, rd, de->d_name))
			continue;
		if (rename(p, full) != 0) {
			int e = errno;
			closedir(dp);
			return emb_errf(err, EMB_EIO, "store %s: cannot move %s back: %s", path, p, strerror(e));
		}
		n++;
		missing = 0;
	}
	rewinddir(dp);
	while ((de = readdir(dp))) {
		long pid;
		char p[PATH_MAX];
		if (parse_entry(b, de->d_name, &pid) == ENTRY_NONE || pid == (long)getpid() ||
		    pid_alive(pid) || !strcmp(de->d_name, target) || join(p, sizeof p, rd, de->d_name) ||
		    lstat(p, &st) != 0)
			continue;
		if (S_ISLNK(st.st_mode) ? unlink(p) == 0 : S_ISDIR(st.st_mode) && store_remove_dir(p) == 0)
			n++;
	}
	closedir(dp);
	if (removed)
		*removed = n;
	return EMB_OK;
}

/* ---- rebuilds -------------------------------------------------------------------------*/

int store_fresh_dir(const char *path, char *out, size_t cap, emb_err *err)
{
	static unsigned counter;
	char rd[PATH_MAX], b[PATH_MAX];
	int rc = store_path_canon(path, rd, b, sizeof rd, err);
	if (rc)
		return rc;
	char stamp[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	for (int tries = 0; tries < 100; tries++) {
		int n = snprintf(out, cap, "%s/.%s.%s.%ld.%u", strcmp(rd, "/") ? rd : "", b, stamp,
				 (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
		if (n < 0 || (size_t)n >= cap)
			return emb_errf(err, EMB_EINVAL, "store %s: path too long", path);
		if (mkdir(out, 0755) == 0)
			return EMB_OK;
		if (errno != EEXIST)
			return emb_errf(err, EMB_EIO, "store %s: cannot create %s: %s", path, out,
					strerror(errno));
	}
	return emb_errf(err, EMB_EIO, "store %s: cannot find a free versioned directory name", path);
}

int store_swap_in(const char *path, const char *fresh_dir, emb_err *err)
{
	char rd[PATH_MAX], b[PATH_MAX], full[PATH_MAX], fdir[PATH_MAX], fbase[PATH_MAX];
	int rc = canon_full(path, rd, b, full, sizeof full, err);
	if (rc)
		return rc;
	split_path(fresh_dir, fdir, fbase, sizeof fdir);
	char tmp[PATH_MAX + 64], old[PATH_MAX * 2] = "";
	int moved_aside = 0;
	if (snprintf(tmp, sizeof tmp, "%s/.%s.swap.%ld", rd, b, (long)getpid()) >= (int)sizeof tmp)
		return emb_errf(err, EMB_EIO, "store %s: path too long", path);
	unlink(tmp);
	if (symlink(fbase, tmp) != 0)
		return emb_errf(err, EMB_EIO, "store %s: cannot create link %s: %s", path, tmp,
				strerror(errno));
	struct stat st;
	if (lstat(full, &st) == 0) {
		if (S_ISLNK(st.st_mode)) {
			char t[PATH_MAX];
			ssize_t n = readlink(full, t, sizeof t - 1);
			if (n > 0) {
				t[n] = 0;
				if (t[0] == '/')
					snprintf(old, sizeof old, "%s", t);
				else
					snprintf(old, sizeof old, "%s/%s", rd, t);
			}
		} else if (S_ISDIR(st.st_mode)) {
			/* A plain directory: exchange it for the link in one step; the old store is
			 * then at tmp. */
			if (renameat2(AT_FDCWD, tmp, AT_FDCWD, full, RENAME_EXCHANGE) == 0) {
				store_remove_dir(tmp);
				return EMB_OK;
			}
			if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
				int e = errno;
				unlink(tmp);
				return emb_errf(err, EMB_EIO, "store %s: cannot swap in %s: %s", path,
						fresh_dir, strerror(e));
			}
			/* No exchange here: move aside first (a reader opening during this instant
			 * finds no store and retries; a kill here is undone by the next writer's
			 * store_path_cleanup). */
			if (snprintf(old, sizeof old, "%s/.%s.old.%ld", rd, b, (long)getpid()) >= (int)sizeof old ||
			    rename(full, old) != 0) {
				int e = errno;
				unlink(tmp);
				return emb_errf(err, EMB_EIO, "store %s: cannot move aside: %s", path, strerror(e));
			}
			moved_aside = 1;
		} else {
			unlink(tmp);
			return emb_errf(err, EMB_EIO, "store %s: %s exists and is not a store", path, full);
		}
	}
	if (rename(tmp, full) != 0) {
		int e = errno;
		unlink(tmp);
		if (moved_aside)
			rename(old, full);
		return emb_errf(err, EMB_EIO, "store %s: cannot swap in %s: %s", path, fresh_dir,
				strerror(e));
	}
	if (old[0]) {
		char oldreal[PATH_MAX], freshreal[PATH_MAX];
		if (realpath(old, oldreal) && realpath(fresh_dir, freshreal) &&
		    strcmp(oldreal, freshreal) != 0)
			store_remove_dir(oldreal);
	}
	return EMB_OK;
}
