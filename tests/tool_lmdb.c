/* tool_lmdb — writes an LMDB environment that is not a vector store, for the tests that
 * check the indexer refuses to adopt one (tests/test_store_paths.py).
 *
 *   tool_lmdb DIR [DB KEY VALUE]...   creates DIR's environment when missing and puts each
 *                                      KEY=VALUE into the named database DB ("-" for the
 *                                      main one), all in one transaction. Exit 0, or 1 with
 *                                      a message naming the failing call.
 */
#include <lmdb.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc < 2 || (argc - 2) % 3) {
		fprintf(stderr, "usage: tool_lmdb DIR [DB KEY VALUE]...\n");
		return 2;
	}
	MDB_env *env;
	MDB_txn *txn;
	int rc = mdb_env_create(&env);
	if (!rc)
		rc = mdb_env_set_maxdbs(env, 8);
	if (!rc)
		rc = mdb_env_open(env, argv[1], 0, 0644);
	if (rc) {
		fprintf(stderr, "tool_lmdb: %s: open: %s\n", argv[1], mdb_strerror(rc));
		return 1;
	}
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0) {
		fprintf(stderr, "tool_lmdb: %s: begin: %s\n", argv[1], mdb_strerror(rc));
		mdb_env_close(env);
		return 1;
	}
	for (int i = 2; i + 2 < argc && !rc; i += 3) {
		MDB_dbi dbi;
		MDB_val k = {strlen(argv[i + 1]), argv[i + 1]}, v = {strlen(argv[i + 2]), argv[i + 2]};
		rc = mdb_dbi_open(txn, strcmp(argv[i], "-") ? argv[i] : NULL, MDB_CREATE, &dbi);
		if (!rc)
			rc = mdb_put(txn, dbi, &k, &v, 0);
		if (rc)
			fprintf(stderr, "tool_lmdb: %s: put %s/%s: %s\n", argv[1], argv[i], argv[i + 1],
				mdb_strerror(rc));
	}
	if (rc)
		mdb_txn_abort(txn);
	else if ((rc = mdb_txn_commit(txn)) != 0)
		fprintf(stderr, "tool_lmdb: %s: commit: %s\n", argv[1], mdb_strerror(rc));
	mdb_env_close(env);
	return rc ? 1 : 0;
}
