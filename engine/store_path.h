/* store_path.h — where a store lives on disk: its link and versioned directories, the
 * single-writer lock, the cleanup of what killed runs left, and the decision whether a path
 * holds a store of ours or may receive a new one.
 *
 * A store at PATH = DIR/NAME is normally a symlink NAME -> .NAME.STAMP.PID.N, a versioned
 * directory beside it that holds LMDB's data.mdb and lock.mdb; a rebuild builds a new
 * versioned directory and swaps the link with one rename(2), so a reader resolves the link
 * once and sees the old store or the new one, never a mix. A plain directory NAME holding
 * data.mdb is a store too (it becomes a link at its first rebuild).
 *
 * Names beside NAME that a killed run may leave (PID: the process that made them):
 *   .NAME.STAMP.PID.N  a versioned directory that was being built or was swapped out
 *   .NAME.swap.PID     the link about to replace NAME, or the plain directory it replaced
 *   .NAME.old.PID      a plain directory moved aside where the file system cannot swap a
 *                      directory for a link in one step
 *   .NAME.lock         the writer lock (kept: it is empty and reused)
 *
 * Aliases: every function here first follows the links of its `path` argument to the store
 * they name (store_path_canon), so a second symlink, a relative path or DIR/../NAME act on
 * the same store, the same lock and the same versioned directories as the original.
 */
#ifndef EMB_STORE_PATH_H
#define EMB_STORE_PATH_H

#include <stddef.h>

#include "err.h"

/* The store `path` names: follows symlinks up to our own link (a link NAME whose target is
 * a versioned directory .NAME.* beside it) or to a path that is not a link, and writes its
 * parent directory (absolute, without links) to dir and its last component to base (cap
 * bytes each). A versioned directory named directly maps to the link that points at it.
 * A missing last component is fine (a store to create); a missing parent is not.
 * Errors: EMB_EIO (the parent does not exist or cannot be searched, a link loop, a path
 * longer than cap), naming the path. */
int store_path_canon(const char *path, char *dir, char *base, size_t cap, emb_err *err);

/* What a store path holds, for a writer. */
typedef enum store_path_kind {
	STORE_PATH_MISSING = 0, /* nothing there: a store may be created */
	STORE_PATH_EMPTY = 1,   /* an empty directory, or one holding only an LMDB environment
				 * without any table (what a run killed while creating a store
				 * leaves): a store may be created in it */
	STORE_PATH_STORE = 2,   /* a store of ours: an LMDB environment with our "meta" table
				 * and its "format" key */
} store_path_kind;

/* Examines path (following links) without changing anything and sets *kind. Anything else
 * is refused with a message naming the path and what is there: a regular file or other
 * non-directory, a link to nothing, a directory holding other files, an LMDB environment
 * that is not a vector store, a data.mdb that is not LMDB. Errors: EMB_ESTORE (not a store
 * and not empty), EMB_EIO (cannot be examined, e.g. permission denied: names the file). */
int store_path_check(const char *path, store_path_kind *kind, emb_err *err);

/* The single-writer lock of a store: an exclusive flock(2) on .NAME.lock beside the
 * canonical store path, so every alias of one store takes the same lock, and the lock covers
 * every version a rebuild swaps in. Readers take no lock. */
typedef struct store_lock store_lock;

/* Takes the lock without waiting. On success *out owns it (store_lock_release). Errors:
 * EMB_ESTORE "another indexer is writing to this store" when it is held, EMB_EIO (the lock
 * file cannot be created or opened), EMB_ENOMEM. */
int store_lock_take(const char *path, store_lock **out, emb_err *err);

/* Releases the lock and frees l. NULL is allowed. */
void store_lock_release(store_lock *l);

/* Removes what killed runs left beside the store (the names listed above), while the caller
 * holds the store's lock, which proves no other writer of this store is alive. An entry is
 * kept when the process named in it is alive (a program using this library without the
 * lock may be building it; a recycled PID keeps an entry until that process ends) and the
 * directory the link points to is never removed. When NAME is missing and a plain
 * directory moved aside by a killed rebuild exists, it is moved back to NAME. Only LMDB's
 * two files and then the empty directory are deleted: a directory holding anything else
 * keeps those files. *removed (may be NULL) gets the number of entries removed or restored.
 * Errors: EMB_EIO (the parent directory cannot be read, or a restore failed). */
int store_path_cleanup(const char *path, int *removed, emb_err *err);

/* Makes a new, empty versioned directory .NAME.STAMP.PID.N beside the canonical store path
 * and writes its path to out (cap bytes). Errors: EMB_EIO (cannot create it), EMB_EINVAL
 * (path too long). */
int store_fresh_dir(const char *path, char *out, size_t cap, emb_err *err);

/* Points the store at fresh_dir (made by store_fresh_dir): a link is replaced with one
 * rename(2), a plain directory is exchanged for a link with one renameat2(RENAME_EXCHANGE)
 * (where the file system cannot, it is moved aside first: a reader opening in that instant
 * finds no store and retries). The directory the store used to be is then removed. Refuses
 * a path that is neither missing, a link to a directory, nor a directory. Errors: EMB_EIO. */
int store_swap_in(const char *path, const char *fresh_dir, emb_err *err);

/* Removes a store directory: its data.mdb and lock.mdb, then the directory if that left it
 * empty (never anything else). Returns 0 when the directory is gone, -1 otherwise. */
int store_remove_dir(const char *dir);

#endif
