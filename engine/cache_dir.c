/* cache_dir.c — where the engine's caches live (see cache_dir.h). */
#include "cache_dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int emb_cache_dir(char *buf, size_t size)
{
	const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	int n;
	if (x && *x)
		n = snprintf(buf, size, "%s/embedstore", x);
	else if (home && *home)
		n = snprintf(buf, size, "%s/.cache/embedstore", home);
	else
		n = -1;
	if (n < 0 || (size_t)n >= size) {
		if (size)
			buf[0] = 0;
		return 0;
	}
	return 1;
}

int emb_cache_dir_make(const char *dir)
{
	if (mkdir(dir, 0755) == 0 || errno == EEXIST)
		return 0;
	if (errno != ENOENT)
		return -1;
	char parent[4096];
	snprintf(parent, sizeof parent, "%s", dir);
	char *slash = strrchr(parent, '/');
	if (!slash || slash == parent)
		return -1;
	*slash = 0;
	if (mkdir(parent, 0755) != 0 && errno != EEXIST)
		return -1;
	return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1;
}
