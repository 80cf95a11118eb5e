/* cli.h — option values as every tool reads them. One parser for numbers, devices and
 * precisions, so that embed, indexer and search accept and refuse the same spellings and say
 * so the same way: "TOOL: --OPT ..." on stderr and exit status 2 (a usage error), never a
 * silent default in place of a mistyped value. */
#ifndef EMB_CLI_H
#define EMB_CLI_H

#include "embed.h"

/* More threads than this is a typo, not a machine (each costs a stack). */
#define CLI_MAX_THREADS 1024

/* The integer v in [lo, hi]; anything else (empty, trailing characters, out of range) exits 2
 * with "TOOL: OPT needs an integer from LO to HI". */
long long cli_int(const char *tool, const char *opt, const char *v, long long lo, long long hi);

/* The finite number v in [lo, hi]; else exits 2 as cli_int does. */
double cli_double(const char *tool, const char *opt, const char *v, double lo, double hi);

/* "cpu", "gpu" or "auto"; else exits 2 naming the three. */
embed_device cli_device(const char *tool, const char *opt, const char *v);

/* "fp32" or "fp16"; else exits 2 naming the two. */
embed_precision cli_precision(const char *tool, const char *opt, const char *v);

#endif
