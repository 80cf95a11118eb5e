/* cache_dir.h — the one directory where the engine keeps what it can recompute (weight
 * digests, compiled GPU pipelines): $XDG_CACHE_HOME/embedstore, else $HOME/.cache/embedstore.
 * Decided here only, so that every cache of the project lands in the same place and the
 * documentation (docs/settings.md) has one rule to state. */
#ifndef EMB_CACHE_DIR_H
#define EMB_CACHE_DIR_H

#include <stddef.h>

/* Writes the cache directory to buf (size bytes). Returns 1, or 0 (buf "") when neither
 * XDG_CACHE_HOME nor HOME is set or the path does not fit. Reads the environment: callers
 * below the settings layer receive the result instead (vk_settings.cache_dir). */
int emb_cache_dir(char *buf, size_t size);

/* Creates dir, and its parent when missing (mode 0755; ~/.cache may not exist yet).
 * Returns 0 when dir exists afterwards, -1 otherwise (errno set). */
int emb_cache_dir_make(const char *dir);

#endif
