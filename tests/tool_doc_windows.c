/* tool_doc_windows — prints the windows a store holds for documents, for
 * tests/test_index_windows.py.
 *
 *   tool_doc_windows STORE ID...    for each ID, one line: "ID nwin a0 b0 a1 b1 ...", the
 *                                   byte range [a, b) of each window in the document's text.
 *                                   Exit 0, or 1 with a message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tool_doc_windows STORE ID...\n");
		return 2;
	}
	store *s;
	store_snapshot *snap = NULL;
	emb_err e = {0};
	store_stats st;
	if (store_open(argv[1], STORE_READONLY, &s, &e) || store_stats_get(s, &st, &e) ||
	    store_snapshot_begin(s, &snap, &e)) {
		fprintf(stderr, "tool_doc_windows: %s\n", e.msg);
		return 1;
	}
	int rc = 0;
	for (int i = 2; i < argc && !rc; i++) {
		store_doc_view v = {0};
		if (store_doc_get(snap, argv[i], strlen(argv[i]), &v, &e)) {
			rc = 1;
			break;
		}
		float *vecs = malloc((size_t)v.nwin * (size_t)st.dim * sizeof *vecs);
		uint32_t *r = malloc((size_t)v.nwin * 2 * sizeof *r);
		if (!vecs || !r)
			rc = 1;
		else if (store_doc_vectors(snap, argv[i], strlen(argv[i]), v.nwin, vecs, r, &e))
			rc = 1;
		if (!rc) {
			printf("%s %u", argv[i], v.nwin);
			for (uint32_t w = 0; w < 2 * v.nwin; w++)
				printf(" %u", r[w]);
			putchar('\n');
		}
		free(vecs);
		free(r);
		store_doc_view_free(&v);
	}
	if (rc)
		fprintf(stderr, "tool_doc_windows: %s\n", e.msg[0] ? e.msg : "out of memory");
	store_snapshot_end(snap);
	store_close(s);
	return rc;
}
