#!/usr/bin/env python3
"""shardset.py — a shard set: N ordinary stores, one per shard of the document ids, and a
manifest naming the stores of one generation, so that `search --stores SET/manifest.json`
answers from all of them as if they were one store.

Why a separate tool: the C indexer builds one shard (`indexer --shard I/N`) wherever a
scheduler runs it (Ray, a Slurm array task, a Kubernetes Indexed Job, a shell loop); what
is left is naming the generation's stores and swapping the manifest atomically, which needs
no engine code. Standard library only (the Ray job, python/ray_index.py, imports it).

Layout of a set directory SET:
    SET/manifest.json                  the published generation (written by `publish`)
    SET/gen-000007/shard-0.store ...   generation 7's shard stores (indexer --shard I/N)
    SET/gen-000007/logs/, parts/       the Ray job's logs and split inputs (may be absent)

Rules:
  * A rebuild writes a new generation directory, never touching the published one; `publish`
    checks every store (`indexer --info`: shard i/N, one model) and replaces manifest.json
    with one rename(2), so a search reads one whole generation or the other, never a mix.
  * Generations older than the one just replaced are removed by `publish` (the previous one
    is kept: a search that read the old manifest an instant before the swap still finds its
    stores; one that finds them gone rereads the manifest). A reader that has the old
    stores open keeps reading them after removal (unlinked files stay until closed).
  * A generation directory newer than the manifest's is an unfinished build: `next_generation`
    returns it, so a rerun resumes it (the indexer skips documents already stored).

    shardset.py shard-of N ID...        the shard of each id (FNV-1a 64 of the UTF-8 bytes mod N)
    shardset.py build SET --shards N [--jobs J] [--indexer BIN] -- INDEXER_ARGS... INPUTS...
    shardset.py next SET                the directory the next build writes (made; an unfinished
                                        one when there is one), for schedulers' array jobs
    shardset.py publish SET (--generation G | --dir GEN_DIR) --shards N [--indexer BIN]
    shardset.py status SET
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MANIFEST = "manifest.json"
FORMAT = "embedstore-shardset"
VERSION = 1
GEN_RE = re.compile(r"^gen-(\d{6,})$")


def fnv1a64(data: bytes) -> int:
    """The id hash of engine/store.h (store_id_hash)."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def shard_of(doc_id, n: int) -> int:
    """The shard of a document id among n (store_shard_of): its UTF-8 bytes, FNV-1a 64, mod n."""
    if isinstance(doc_id, str):
        doc_id = doc_id.encode("utf-8")
    return fnv1a64(doc_id) % n if n > 1 else 0


def gen_dir(set_dir: str, gen: int) -> str:
    return os.path.join(set_dir, "gen-%06d" % gen)


def shard_store(set_dir: str, gen: int, i: int) -> str:
    return os.path.join(gen_dir(set_dir, gen), "shard-%d.store" % i)


def read_manifest(set_dir: str):
    """The published manifest (a dict), or None when the set has none yet."""
    try:
        with open(os.path.join(set_dir, MANIFEST), encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        return None
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise SystemExit("shardset: %s/%s is not a version-%d %s manifest" % (set_dir, MANIFEST, VERSION, FORMAT))
    return m


def generations(set_dir: str):
    """Generation numbers with a directory in the set, ascending."""
    try:
        names = os.listdir(set_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(GEN_RE.match, names) if m)


def next_generation(set_dir: str) -> int:
    """The generation a build writes: an unfinished one (newer than the manifest's) if there
    is one, so a rerun resumes it; else the manifest's + 1 (1 for a new set)."""
    m = read_manifest(set_dir)
    cur = m["generation"] if m else 0
    newer = [g for g in generations(set_dir) if g > cur]
    return newer[-1] if newer else cur + 1


def store_info(indexer: str, store: str) -> dict:
    """`indexer --info` of a store, as a dict."""
    p = subprocess.run([indexer, "--store", store, "--info"], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit("shardset: %s" % (p.stderr.strip() or "indexer --info %s failed" % store))
    return json.loads(p.stdout)


def publish(set_dir: str, gen: int, n: int, indexer: str = "bin/indexer") -> dict:
    """Checks generation gen's n stores and makes it the set's manifest with one rename; then
    removes generations older than the one it replaced. Returns the manifest."""
    cur = read_manifest(set_dir)
    if cur and cur["generation"] >= gen:
        raise SystemExit("shardset: %s already publishes generation %d (>= %d)" % (set_dir, cur["generation"], gen))
    stores, model = [], None
    for i in range(n):
        path = shard_store(set_dir, gen, i)
        info = store_info(indexer, path)
        if info["shard"] != [i, n]:
            raise SystemExit("shardset: %s is shard %s, not %d/%d" % (path, info["shard"], i, n))
        if model is None:
            model = info["model"]
        elif info["model"] != model:
            raise SystemExit("shardset: %s was built with model %s, not %s like shard 0" % (path, info["model"], model))
        stores.append(os.path.relpath(path, set_dir))
    man = {"format": FORMAT, "version": VERSION, "generation": gen,
           "model": {k: model[k] for k in ("name", "sha256", "dim")}, "stores": stores}
    tmp = os.path.join(set_dir, ".%s.%d.tmp" % (MANIFEST, os.getpid()))
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(set_dir, MANIFEST))
    dfd = os.open(set_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    prev = cur["generation"] if cur else 0
    for g in generations(set_dir):
        if g < prev:
            shutil.rmtree(gen_dir(set_dir, g), ignore_errors=True)
    return man


def index_shard(indexer: str, store: str, i: int, n: int, args, log=None) -> int:
    """Runs one shard's indexer (--shard i/n --prune, so a rerun resumes and the store ends up
    equal to its shard of the inputs); returns its exit status."""
    cmd = [indexer, "--store", store, "--shard", "%d/%d" % (i, n), "--prune"] + list(args)
    return subprocess.run(cmd, stderr=log).returncode


def build(set_dir: str, n: int, args, jobs: int = 1, indexer: str = "bin/indexer") -> dict:
    """Builds the next generation (or resumes an unfinished one) with n shard indexers, at
    most `jobs` at a time, and publishes it."""
    os.makedirs(set_dir, exist_ok=True)
    gen = next_generation(set_dir)
    os.makedirs(gen_dir(set_dir, gen), exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        rcs = list(ex.map(lambda i: index_shard(indexer, shard_store(set_dir, gen, i), i, n, args), range(n)))
    bad = [i for i, rc in enumerate(rcs) if rc]
    if bad:
        raise SystemExit("shardset: shard%s %s failed; rerun to resume generation %d" %
                         ("s" if len(bad) > 1 else "", ",".join(map(str, bad)), gen))
    return publish(set_dir, gen, n, indexer)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="shardset.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("shard-of")
    p.add_argument("n", type=int)
    p.add_argument("ids", nargs="+")
    p = sub.add_parser("build")
    p.add_argument("set")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--indexer", default="bin/indexer")
    p = sub.add_parser("next")
    p.add_argument("set")
    p = sub.add_parser("publish")
    p.add_argument("set")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--generation", type=int)
    g.add_argument("--dir", help="a generation directory of SET, as `next` printed it")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--indexer", default="bin/indexer")
    p = sub.add_parser("status")
    p.add_argument("set")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in argv:  # what follows goes to every shard's indexer
        k = argv.index("--")
        argv, rest = argv[:k], argv[k + 1:]
    a = ap.parse_args(argv)
    if a.cmd == "shard-of":
        for i in a.ids:
            print(shard_of(i, a.n))
    elif a.cmd == "build":
        print(json.dumps(build(a.set, a.shards, rest, a.jobs, a.indexer)))
    elif a.cmd == "next":
        d = gen_dir(a.set, next_generation(a.set))
        os.makedirs(d, exist_ok=True)
        print(d)
    elif a.cmd == "publish":
        gen = a.generation
        if a.dir is not None:
            m = GEN_RE.match(os.path.basename(os.path.normpath(a.dir)))
            if not m or os.path.realpath(os.path.dirname(os.path.normpath(a.dir))) != os.path.realpath(a.set):
                raise SystemExit("shardset: --dir %s is not a generation directory of %s" % (a.dir, a.set))
            gen = int(m.group(1))
        print(json.dumps(publish(a.set, gen, a.shards, a.indexer)))
    else:
        m = read_manifest(a.set)
        print(json.dumps({"manifest": m, "generations": generations(a.set),
                          "next": next_generation(a.set)}))


if __name__ == "__main__":
    main()
