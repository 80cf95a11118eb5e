"""test_ray_shards.py — python/ray_index.py on a local Ray cluster (ray.init(num_cpus=2) in
the job): SciFact documents indexed into 3 shards answer every query as one store does (ids
and ranks equal, scores within 1e-6); a Ray worker killed (SIGKILL) while its shard's indexer
runs, then the job rerun, completes with every document stored exactly once.

Run by tests/run.sh with $BIN and $BUILD; exits 77 when Ray (scripts/setup installs it), the
model or ../shared/data/scifact is missing."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from refcheck import ASAN, INDEXER, MODEL, ROOT, SEARCH, check, failures, run, scifact_or_skip

try:
    import ray  # noqa: F401
except ImportError:
    print("skipped: ray not installed (scripts/setup installs it into .venv)")
    sys.exit(77)
SCIFACT = scifact_or_skip()

# Under ASan every indexer is ~10x slower: fewer documents, the same kill and checks.
NDOCS = 60 if ASAN else 150
# Windows of 64 tokens (SciFact documents have ~5), committed 4 documents at a time, progress
# every 0.2 s: each shard runs long enough, even on a quiet machine, to be killed mid-run
# after its first commits. (ASan makes --truncate slow enough.)
OPTS = ["--model", MODEL, "--device", "cpu", "--window", "64", "--window-docs", "4", "--progress-every", "0.2"]
if ASAN:
    OPTS.append("--truncate")
T0 = time.time()


def lap(what):
    print(f"{time.time() - T0:6.1f} s  {what}", flush=True)


def results(args):
    """{qid: [(id, rank, score)]} of a --queries --json run."""
    rc, out, err = run([SEARCH, *args, "--queries", queries, "--json", "--k", "10", "--snippet", "0"])
    check(rc == 0, f"search {args}: {err.strip()}")
    return {r["id"]: [(h["id"], h["rank"], h["score"]) for h in r["results"]]
            for r in map(json.loads, out.splitlines())} if rc == 0 else {}


with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "c.jsonl")
    ids = []
    with open(os.path.join(SCIFACT, "corpus.jsonl")) as f, open(corpus, "w") as g:
        for line in f:
            g.write(line)
            ids.append(json.loads(line)["_id"])
            if len(ids) == NDOCS:
                break
    queries = os.path.join(tmp, "q.jsonl")
    with open(os.path.join(SCIFACT, "queries.jsonl")) as f, open(queries, "w") as g:
        for i, line in enumerate(f):
            if i == 50:
                break
            g.write(line)
    single = os.path.join(tmp, "all.store")
    rc, _, err = run([INDEXER, "--store", single, "--quiet", *OPTS, corpus])
    check(rc == 0, f"single store: {err.strip()}")
    lap("single store")

    setdir = os.path.join(tmp, "set")
    job = [sys.executable, os.path.join(ROOT, "python/ray_index.py"), setdir, "--shards", "3", "--num-cpus", "2",
           "--input", corpus, "--indexer", INDEXER, "--", *OPTS]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    p = subprocess.Popen(job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    # Kill the Ray worker of the first shard whose indexer has committed something.
    logs = os.path.join(setdir, "gen-000001", "logs")
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and p.poll() is None:
        for i in range(3):
            try:
                log = open(os.path.join(logs, f"shard-{i}.log"), errors="replace").read()
                pid = int(open(os.path.join(logs, f"shard-{i}.pid")).read())
            except (OSError, ValueError):
                continue
            if re.search(r"indexer: [1-9]\d* docs", log) and "indexer: done" not in log:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed = (i, pid)
                except ProcessLookupError:
                    pass
                break
        time.sleep(0.2)
    check(killed is not None, "no shard's worker could be killed mid-run")
    lap(f"killed the worker of shard {killed}")
    out1, _ = p.communicate(timeout=300)
    lap(f"first run: exit {p.returncode}")
    manifest = os.path.join(setdir, "manifest.json")
    if p.returncode != 0 or not os.path.exists(manifest):
        p2 = subprocess.run(job, capture_output=True, text=True, env=env, timeout=300)
        check(p2.returncode == 0, f"rerun: exit {p2.returncode}: {p2.stderr[-2000:]}")
        lap("rerun")
    check(os.path.exists(manifest), f"no manifest; first run said: {out1[-2000:]}")
    man = json.load(open(manifest))
    check(man["generation"] == 1 and len(man["stores"]) == 3, f"manifest {man}")
    if killed:
        log = open(os.path.join(logs, f"shard-{killed[0]}.log"), errors="replace").read()
        check(log.count("\n# ") >= 2, f"shard {killed[0]}'s indexer ran once only:\n{log[-1500:]}")

    # Every document once: the shards' ids, listed whole, are the corpus's.
    stored = []
    for st in man["stores"]:
        rc, out, err = run([SEARCH, "--store", os.path.join(setdir, st), "--k", "100000", "--format", "trec", "x"])
        stored += [line.split()[2] for line in out.splitlines()]
        rc, out, err = run([INDEXER, "--store", os.path.join(setdir, st), "--check"])
        check(rc == 0, f"--check {st}: {out.strip()} {err.strip()}")
    check(sorted(stored) == sorted(ids), f"{len(stored)} ids stored ({len(set(stored))} distinct), corpus {len(ids)}")

    want = results(["--store", single])
    got = results(["--stores", manifest])
    check(len(want) == 50 and set(got) == set(want), f"queries answered: {len(got)} of {len(want)}")
    for q, w in want.items():
        g = got.get(q, [])
        check([h[:2] for h in g] == [h[:2] for h in w], f"query {q}: {g} != {w}")
        check(all(abs(a[2] - b[2]) <= 1e-6 for a, b in zip(g, w)), f"query {q}: scores differ by > 1e-6")
    lap("compared")

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_ray_shards: all checks passed")
