/* tool_store_retype — rewrites a store's compact copy for another vector type from its f32
 * rows (store_retype), so an evaluation compares f32, int8 and binary on the same vectors
 * without embedding the corpus three times (scripts/eval-beir --retype-from).
 *   tool_store_retype STORE f32|int8|binary */
#include <stdio.h>

#include "store.h"

int main(int argc, char **argv)
{
	quant_type vt;
	if (argc != 3 || quant_parse(argv[2], &vt)) {
		fprintf(stderr, "usage: tool_store_retype STORE f32|int8|binary\n");
		return 2;
	}
	store *s;
	emb_err e = {0};
	if (store_open(argv[1], 0, &s, &e) || store_retype(s, vt, &e)) {
		fprintf(stderr, "tool_store_retype: %s\n", e.msg);
		return 1;
	}
	store_close(s);
	return 0;
}
