"""test_shards.py — scale-out through the real tools: indexer --shard puts every document in
exactly one shard (several N, ids checked against the published FNV-1a 64 test vectors);
search over several stores equals one store holding every document (TREC runs, JSON with
snippets, one-shot and batched, shards of mixed vector types rescored); duplicate ids count
once; another model is one line naming the store; a shard store refuses another --shard or
none, and --delete / --prune act within the shard; a shard set's manifest is searched as
one store, and searches running while rebuilds publish new generations never see a mix of
two; the README's Slurm and Kubernetes recipes, run by a loop standing in for the scheduler,
build a set equal to one store.

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model or SciFact (in
../shared/data) is missing. About 200 documents, truncated to 64 tokens, on the CPU."""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from refcheck import ASAN, INDEXER, MODEL, ROOT, SEARCH, check, failures, run, scifact_or_skip

sys.path.insert(0, os.path.join(ROOT, "python"))
import shardset  # noqa: E402

SCIFACT = scifact_or_skip()

T0 = time.time()


def lap(what):
    print(f"{time.time() - T0:6.1f} s  {what}", flush=True)


# Under ASan every indexer run costs ~10 s (the model's load and forward, instrumented): the
# sanitizer pass checks the same C paths with fewer runs (one N, two rebuilds, no recipes:
# they run the same indexer and search as the rest).
NS = (3,) if ASAN else (2, 3, 5)
GENS = (2, 3) if ASAN else (2, 3, 4)

FAST = ["--model", MODEL, "--device", "cpu", "--window", "64", "--truncate", "--quiet"]

# FNV-1a 64 test vectors (Fowler/Noll/Vo's published table), so the rule is the published one.
for s, h in ((b"", 0xcbf29ce484222325), (b"a", 0xaf63dc4c8601ec8c), (b"foobar", 0x85944171f73967e8)):
    check(shardset.fnv1a64(s) == h, f"fnv1a64({s!r}) = {shardset.fnv1a64(s):#x}, published {h:#x}")


def index(store, corpus, *args):
    rc, _, err = run([INDEXER, "--store", store, *FAST, *args, corpus])
    check(rc == 0, f"indexer {store} {args}: {err.strip()}")
    return rc


def all_ids(*stores):
    """Every document id of the stores (a search with k above their size), in rank order."""
    args = [a for s in stores for a in ("--store", s)]
    rc, out, err = run([SEARCH, *args, "--k", "100000", "--format", "trec", "anything at all"])
    check(rc == 0, f"search {stores}: {err.strip()}")
    return [line.split()[2] for line in out.splitlines()]


def search(stores, *args, manifest=None):
    sargs = ["--stores", manifest] if manifest else [a for s in stores for a in ("--store", s)]
    rc, out, err = run([SEARCH, *sargs, *args])
    check(rc == 0, f"search {stores or manifest} {args}: {err.strip()}")
    return out


def trec_rows(out):
    return [(r[0], r[2], int(r[3]), float(r[4])) for r in (line.split() for line in out.splitlines())]


with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "c.jsonl")
    docs = []
    with open(os.path.join(SCIFACT, "corpus.jsonl")) as f:
        for line in f:
            docs.append(json.loads(line))
            if len(docs) == (40 if ASAN else 120):
                break
    # Ids of other shapes: non-ASCII bytes, an integer (stored as its decimal text).
    docs += [{"_id": "dé-文書-1", "title": "unicode id", "text": "a document whose id is not ASCII"},
             {"_id": 987654321, "title": "integer id", "text": "a document whose id is a JSON integer"}]
    with open(corpus, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    ids = sorted(str(d["_id"]) for d in docs)
    # A smaller corpus for the generations and the recipes (many indexer runs).
    small_docs = docs[:20 if ASAN else 40] + docs[-2:]
    small = os.path.join(tmp, "small.jsonl")
    with open(small, "w") as f:
        for d in small_docs:
            f.write(json.dumps(d) + "\n")
    queries = os.path.join(tmp, "q.jsonl")
    with open(os.path.join(SCIFACT, "queries.jsonl")) as f, open(queries, "w") as g:
        for i, line in enumerate(f):
            if i == 40:
                break
            g.write(line)

    single = os.path.join(tmp, "all.store")
    index(single, corpus)
    check(sorted(all_ids(single)) == ids, "the single store holds every document")

    lap("single store")
    # --- every document in exactly one shard, the one the rule names, for several N -------
    shards = {}
    for n in NS:
        got = {}
        for i in range(n):
            st = os.path.join(tmp, f"n{n}-s{i}.store")
            index(st, corpus, "--shard", f"{i}/{n}")
            got[i] = all_ids(st)
            rc, out, err = run([INDEXER, "--store", st, "--info"])
            info = json.loads(out) if rc == 0 else {}
            check(info.get("shard") == [i, n] and info.get("docs") == len(got[i]),
                  f"--info of shard {i}/{n}: {out.strip()} {err.strip()}")
        union = sorted(x for v in got.values() for x in v)
        check(union == ids, f"N={n}: shards hold {len(union)} ids ({len(set(union))} distinct), corpus {len(ids)}")
        for i, v in got.items():
            wrong = [x for x in v if shardset.shard_of(x, n) != i]
            check(not wrong, f"N={n} shard {i} holds ids of other shards: {wrong[:5]}")
            check(len(v) > 0, f"N={n} shard {i} is empty")
        shards[n] = [os.path.join(tmp, f"n{n}-s{i}.store") for i in range(n)]
    s3 = shards[3]

    lap("shards N=2,3,5")
    # --- the merge equals one store ------------------------------------------------------
    for k in ("10", "100"):
        want = search([single], "--queries", queries, "--format", "trec", "--k", k)
        got = search(s3, "--queries", queries, "--format", "trec", "--k", k)
        check(len(want.splitlines()) == 40 * min(int(k), len(docs)), f"k={k}: {len(want.splitlines())} lines")
        check(got == want, f"3 shards, --queries, trec, k={k}: differs from one store")
        if 5 in shards:
            got5 = search(list(reversed(shards[5])), "--queries", queries, "--format", "trec", "--k", k)
            check(got5 == want, f"5 shards (named in reverse), k={k}: differs from one store")
    for q in ("vitamin D deficiency and disease", "protein folding", "x"):
        want = search([single], "--json", "--k", "7", "--snippet", "120", q)
        got = search(s3, "--json", "--k", "7", "--snippet", "120", q)
        check(got == want, f"one-shot JSON with snippets for {q!r}: {got[:300]} != {want[:300]}")
    want = search([single], "--queries", queries, "--json", "--k", "5")
    check(search(s3, "--queries", queries, "--json", "--k", "5") == want, "--queries --json differs")
    # k above some shards' sizes, and a k of 1
    for k in ("1", "150"):
        check(search(s3, "--format", "trec", "--k", k, "cancer") ==
              search([single], "--format", "trec", "--k", k, "cancer"), f"k={k} differs")

    lap("merge")
    # Shards of mixed vector types: each rescores its own candidates, so the scores are exact
    # cosines; with N x k covering every shard the result is the f32 one.
    mixed = []
    for i, vt in enumerate(("int8", "binary", "f32")):
        st = os.path.join(tmp, f"mixed-{vt}.store")
        index(st, corpus, "--shard", f"{i}/3", "--vectors", vt)
        mixed.append(st)
    want = trec_rows(search([single], "--queries", queries, "--format", "trec", "--k", "10"))
    got = trec_rows(search(mixed, "--queries", queries, "--format", "trec", "--k", "10", "--rescore", "100"))
    check([r[:3] for r in got] == [r[:3] for r in want], "int8 + binary + f32 shards, --rescore 100: other ids")
    check(all(abs(a[3] - b[3]) <= 1e-6 for a, b in zip(got, want)), "mixed shards: scores differ by > 1e-6")
    got = trec_rows(search(mixed, "--queries", queries, "--format", "trec", "--k", "10"))
    same = sum(a[1] == b[1] for a, b in zip(got, want)) / len(want)
    check(same >= 0.9, f"mixed shards, default rescore: {same:.2f} of ranks agree with f32")
    check(len(trec_rows(search(mixed, "--format", "trec", "--k", "10", "--rescore", "0", "cancer"))) == 10,
          "--rescore 0 over mixed shards answers")

    # Duplicate ids: the whole store plus one of its shards answers as the whole store.
    want = search([single], "--queries", queries, "--format", "trec", "--k", "20")
    check(search([single, s3[1]], "--queries", queries, "--format", "trec", "--k", "20") == want,
          "a duplicate id counts once with its best score")
    check(search([s3[0], single, s3[0]], "--json", "--k", "20", "vitamin") ==
          search([single], "--json", "--k", "20", "vitamin"), "duplicates in JSON")

    # Another model: one line naming the store that differs, no output.
    # (the same weights with max_seq_length 128: another identity)
    short = os.path.join(tmp, "model-128")
    os.mkdir(short)
    for name in os.listdir(MODEL):
        if name != "sentence_bert_config.json":
            os.symlink(os.path.join(MODEL, name), os.path.join(short, name))
    with open(os.path.join(short, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 128, "do_lower_case": False}, f)
    tiny = os.path.join(tmp, "short.store")
    rc, _, err = run([INDEXER, "--store", tiny, *FAST, "--model", short, corpus])
    check(rc == 0, f"max_seq_length 128 store: {err.strip()}")
    rc, out, err = run([SEARCH, "--store", single, "--store", tiny, "query"])
    check(rc == 1 and out == "" and len(err.strip().splitlines()) == 1 and f"store {tiny} was built with model" in err,
          f"another model: rc {rc}, {err!r}")

    lap("types, duplicates, model")
    # --- a shard store keeps to its shard -----------------------------------------------
    rc, _, err = run([INDEXER, "--store", s3[0], *FAST, "--shard", "1/3", corpus])
    check(rc == 1 and "is shard 0/3, not 1/3" in err, f"another --shard: rc {rc}, {err!r}")
    rc, _, err = run([INDEXER, "--store", s3[0], *FAST, corpus])
    check(rc == 1 and "is shard 0/3: give --shard 0/3" in err, f"no --shard: rc {rc}, {err!r}")
    rc, _, err = run([INDEXER, "--store", single, *FAST, "--shard", "0/3", corpus])
    check(rc == 1 and "holds documents and is not a shard" in err, f"--shard on a whole store: rc {rc}, {err!r}")
    for bad in ("3/3", "-1/3", "1/0", "1", "a/b", "1/3x"):
        rc, _, err = run([INDEXER, "--store", s3[0], "--shard", bad, corpus])
        check(rc == 2 and "--shard must be I/N" in err, f"--shard {bad}: rc {rc}, {err!r}")
    mine = [x for x in ids if shardset.shard_of(x, 3) == 0]
    other = [x for x in ids if shardset.shard_of(x, 3) == 1]
    rc, _, err = run([INDEXER, "--store", s3[0], "--model", MODEL, "--device", "cpu", "--shard", "0/3",
                      "--delete", mine[0], "--delete", other[0]])
    check(rc == 0 and "passed over 1 document" in err, f"--delete across shards: {err.strip()}")
    check(sorted(all_ids(s3[0])) == sorted(mine[1:]), "--delete removed exactly the shard's own id")
    # --prune with inputs that lost a document of each shard: each shard loses only its own.
    pruned = os.path.join(tmp, "pruned.jsonl")
    drop = {mine[1], other[1]}
    with open(pruned, "w") as f:
        for d in docs:
            if str(d["_id"]) not in drop:
                f.write(json.dumps(d) + "\n")
    index(s3[0], pruned, "--shard", "0/3", "--prune")
    index(s3[1], pruned, "--shard", "1/3", "--prune")
    check(sorted(all_ids(s3[0])) == sorted(set(mine) - {mine[1]}), "--prune in shard 0 (mine[0] indexed again)")
    check(sorted(all_ids(s3[1])) == sorted(set(other) - {other[1]}),
          "--prune in shard 1 (its other[0] stayed: shard 0's --delete passed it over)")

    lap("shard rules")
    # --- shard sets: manifest, generations, concurrent searches --------------------------
    setdir = os.path.join(tmp, "set")
    man = shardset.build(setdir, 3, [*FAST, corpus], jobs=2, indexer=INDEXER)
    mpath = os.path.join(setdir, "manifest.json")
    check(man["generation"] == 1 and len(man["stores"]) == 3, f"manifest {man}")
    want = search([single], "--queries", queries, "--format", "trec", "--k", "10")
    check(search(None, "--queries", queries, "--format", "trec", "--k", "10", manifest=mpath) == want,
          "--stores MANIFEST differs from one store")
    # A manifest listing shards out of order, or another model, is refused.
    bad = dict(man, stores=list(reversed(man["stores"])))
    badp = os.path.join(setdir, "bad.json")
    with open(badp, "w") as f:
        json.dump(bad, f)
    rc, _, err = run([SEARCH, "--stores", badp, "q"])
    check(rc == 1 and "but it is listed as shard 0/3" in err, f"shards out of order: {err!r}")
    with open(badp, "w") as f:
        json.dump(dict(man, model=dict(man["model"], sha256="0" * 64)), f)
    rc, _, err = run([SEARCH, "--stores", badp, "q"])
    check(rc == 1 and "names model" in err, f"manifest of another model: {err!r}")

    lap("manifest")
    # Generations g = 2, 3, 4 hold the same documents under ids prefixed "g<g>-", so a search
    # that mixed two generations' shards would print two prefixes. Searches (one-shot
    # processes and a long-lived --queries - reader) run while the rebuilds publish.
    stop = threading.Event()
    seen, mixed_gen = set(), []
    n_docs = len(small_docs)

    def prefixes(out):
        return {line.split()[2].split("-", 1)[0] for line in out.splitlines()}

    def searcher():
        while not stop.is_set():
            p = subprocess.run([SEARCH, "--stores", mpath, "--format", "trec", "--k", str(n_docs), "cells"],
                               capture_output=True, text=True)
            if p.returncode:
                mixed_gen.append("search failed: " + p.stderr.strip())
                continue
            pf = prefixes(p.stdout)
            seen.update(pf)
            if len(pf) != 1 or len(p.stdout.splitlines()) != n_docs:
                mixed_gen.append(f"{sorted(pf)} {len(p.stdout.splitlines())} lines")
            time.sleep(0.05)  # leave the rebuilds some CPU

    def streamer():
        p = subprocess.Popen([SEARCH, "--stores", mpath, "--queries", "-", "--format", "trec", "--k", str(n_docs)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        i = 0
        while not stop.is_set():
            p.stdin.write(json.dumps({"_id": f"q{i}", "text": "cells"}) + "\n")
            p.stdin.flush()
            lines = [p.stdout.readline() for _ in range(n_docs)]
            pf = prefixes("".join(lines))
            seen.update(pf)
            if len(pf) != 1:
                mixed_gen.append(f"streaming reader: {sorted(pf)}")
            i += 1
            time.sleep(0.05)
        p.stdin.close()
        p.wait()

    threads = [threading.Thread(target=searcher), threading.Thread(target=streamer)]
    for g in GENS:
        gc = os.path.join(tmp, f"gen{g}.jsonl")
        with open(gc, "w") as f:
            for d in small_docs:
                f.write(json.dumps(dict(d, _id=f"g{g}-{d['_id']}")) + "\n")
        if g == 2:
            shardset.build(setdir, 3, [*FAST, gc], jobs=1, indexer=INDEXER)  # leaves generation 1 on disk
            for t in threads:
                t.start()
        else:
            shardset.build(setdir, 3, [*FAST, gc], jobs=1, indexer=INDEXER)
    deadline = time.time() + 30
    while f"g{GENS[-1]}" not in seen and time.time() < deadline:  # the readers move to the last one
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    check(not mixed_gen, f"searches saw mixed generations or failed: {mixed_gen[:5]}")
    check({f"g{g}" for g in GENS[1:]} <= seen, f"the searches saw generations {sorted(seen)}")
    check(shardset.generations(setdir) == [GENS[-1] - 1, GENS[-1]],
          f"old generations removed: {shardset.generations(setdir)}")

    lap("generations")
    # --- the README's recipes, a loop standing in for the scheduler ----------------------
    if not ASAN:
        single_small = os.path.join(tmp, "small.store")
        index(single_small, small)
        want = search([single_small], "--queries", queries, "--format", "trec", "--k", "10")
    readme = open(os.path.join(ROOT, "README.md")).read()
    slurm = re.search(r"`shard.sh`:\n\n```sh\n(.*?)```", readme, re.S).group(1)
    k8s = re.search(r"args:\n        - \|\n((?:          .*\n)+)", readme).group(1)
    k8s = "\n".join(line[10:] for line in k8s.splitlines())
    recipes = (("slurm", slurm, "SLURM_ARRAY_TASK_ID"), ("kubernetes", k8s, "JOB_COMPLETION_INDEX"))
    for name, script, var in () if ASAN else recipes:
        rset = os.path.join(tmp, "set-" + name)
        rc, gdir, err = run([sys.executable, os.path.join(ROOT, "python/shardset.py"), "next", rset])
        gdir = gdir.strip()
        env = dict(os.environ, PATH=os.path.dirname(INDEXER) + ":" + os.environ["PATH"], N="3",
                   GEN_DIR=gdir, CORPUS=small, INDEXER_OPTS=" ".join(FAST))
        for i in range(3):
            p = subprocess.run(["sh", "-c", script], env=dict(env, **{var: str(i)}), capture_output=True, text=True)
            check(p.returncode == 0, f"{name} task {i}: {p.stderr.strip()}")
        rc, out, err = run([sys.executable, os.path.join(ROOT, "python/shardset.py"), "publish", rset,
                            "--dir", gdir, "--shards", "3", "--indexer", INDEXER])
        check(rc == 0, f"{name} publish: {err.strip()}")
        check(search(None, "--queries", queries, "--format", "trec", "--k", "10",
                     manifest=os.path.join(rset, "manifest.json")) == want, f"{name} recipe: differs from one store")

lap("recipes")
if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_shards: all checks passed")
