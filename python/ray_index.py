#!/usr/bin/env python3
"""ray_index.py — builds a shard set (python/shardset.py) on a Ray cluster: Ray tasks split
the JSONL inputs by shard, then run one C indexer per shard (`indexer --shard I/N`; one GPU
each where the cluster has GPUs), and the driver publishes the manifest when every shard is
done. The C indexer does the work; Ray only schedules it.

    python3 python/ray_index.py SET --shards N --input corpus.jsonl [--input more.jsonl ...]
        [--address auto] [--num-cpus C] [--gpus-per-shard 0|1] [--cpus-per-shard K]
        [--indexer bin/indexer] [-- INDEXER_OPTIONS...]

Resuming: a rerun after a failure (a worker or node died, the driver was stopped) writes the
same unfinished generation (shardset.next_generation): inputs already split are not split
again (each input's parts are renamed into place when complete), and each shard's indexer
skips the documents its store already holds (content hash), so nothing is embedded twice and
no id is stored twice. Ray also retries a task whose worker died (--retries, default 2); the
indexer is tied to its worker (it gets SIGTERM when the worker dies, commits what it read
and exits, releasing the store's lock for the retry).

The split inputs (SET/gen-G/parts/) are removed once the generation is published.

Progress: every few seconds one line on stderr: shards done, and each running shard's last
progress line (its indexer logs to SET/gen-G/logs/shard-I.log).

Splitting: a line goes to the shard of its id (the first of --id-field present: a string,
or an integer as its decimal text), by the rule of engine/store.h (FNV-1a 64 mod N); a line
without a readable id goes to shard 0, whose indexer reports it. Each indexer still runs
with --shard I/N and the job fails if one passed a document over (the split and the
indexer disagreed), so no document is silently lost.

GPUs: with --gpus-per-shard 1 a task gets one of Ray's GPUs and runs `--device gpu --gpu ID`
with ID = ray.get_gpu_ids()[0]; this assumes the Vulkan device order of `embed
--list-devices` is the CUDA order Ray counts in (true on the usual one-vendor nodes;
check it once on a new machine type).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shardset  # noqa: E402


def _id_of(line: bytes, id_fields):
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    for k in id_fields:
        if k in rec:
            v = rec[k]
            if isinstance(v, bool):
                return None
            if isinstance(v, str):
                return v.encode("utf-8")
            if isinstance(v, int):
                return str(v).encode()
            return None
    return None


def split_input(path: str, idx: int, n: int, gdir: str, id_fields):
    """Writes input idx's lines into gdir/parts/shard-I/part-IDX.jsonl for every shard I,
    each renamed into place complete; skipped when all n parts exist (a resumed run)."""
    finals = [os.path.join(gdir, "parts", "shard-%d" % i, "part-%05d.jsonl" % idx) for i in range(n)]
    if all(os.path.exists(f) for f in finals):
        return [None] * n
    tmps = [f + ".tmp.%d" % os.getpid() for f in finals]
    outs = []
    for t in tmps:
        os.makedirs(os.path.dirname(t), exist_ok=True)
        outs.append(open(t, "wb"))
    counts = [0] * n
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            if not line.endswith(b"\n"):
                line += b"\n"
            did = _id_of(line, id_fields)
            i = shardset.shard_of(did, n) if did else 0
            outs[i].write(line)
            counts[i] += 1
    for o, t, fin in zip(outs, tmps, finals):
        o.flush()
        os.fsync(o.fileno())
        o.close()
        os.rename(t, fin)
    return counts


def _die_with_parent():
    """In the indexer's child process: SIGTERM when the Ray worker that started it dies."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def index_shard(i: int, n: int, gdir: str, store: str, nparts: int, indexer: str, opts, gpus_per_shard: int,
                cpus_per_shard: int):
    """Runs shard i's indexer over its parts; returns (i, exit status, summary lines)."""
    import ray  # in the worker
    logs = os.path.join(gdir, "logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, "shard-%d.pid" % i), "w") as f:
        f.write("%d\n" % os.getpid())
    parts = [os.path.join(gdir, "parts", "shard-%d" % i, "part-%05d.jsonl" % p) for p in range(nparts)]
    dev = []
    if gpus_per_shard:
        ids = ray.get_gpu_ids()
        dev = ["--device", "gpu", "--gpu", str(int(ids[0]))] if ids else ["--device", "gpu"]
    cmd = [indexer, "--store", store,
           "--shard", "%d/%d" % (i, n), "--prune", "--progress-every", "2",
           "--threads", str(max(1, cpus_per_shard))] + dev + list(opts) + parts
    # A retry after a worker died may start while that worker's indexer (sent SIGTERM) still
    # commits and holds the store's lock: wait for it, up to a minute.
    for attempt in range(30):
        with open(os.path.join(logs, "shard-%d.log" % i), "ab") as log:
            log.write(("\n# %s pid %d: %s\n" % (time.strftime("%H:%M:%S"), os.getpid(), " ".join(cmd))).encode())
            log.flush()
            start = log.tell()
            rc = subprocess.run(cmd, stdout=log, stderr=log, preexec_fn=_die_with_parent).returncode
        with open(os.path.join(logs, "shard-%d.log" % i), "rb") as log:
            log.seek(start)
            tail = log.read()[-4000:].decode("utf-8", "replace").splitlines()
        if rc == 0 or not any("another indexer is writing to this store" in l for l in tail):
            break
        time.sleep(2)
    summary = [l for l in tail if l.startswith("indexer: done") or "passed over" in l]
    passed = [l for l in summary if "passed over" in l and not l.split("passed over ")[1].startswith("0 ")]
    if rc == 0 and passed:
        return i, 1, ["the split sent shard %d documents of other shards: %s" % (i, passed[-1])]
    return i, rc, summary or tail[-3:]


def last_progress(gdir: str, i: int) -> str:
    try:
        with open(os.path.join(gdir, "logs", "shard-%d.log" % i), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            lines = [l.strip() for l in f.read().decode("utf-8", "replace").replace("\r", "\n").split("\n") if l.strip()]
    except FileNotFoundError:
        return "waiting"
    return lines[-1][:160] if lines else "starting"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = []
    if "--" in argv:
        k = argv.index("--")
        argv, opts = argv[:k], argv[k + 1:]
    ap = argparse.ArgumentParser(prog="ray_index.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("set")
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--input", action="append", required=True, help="a JSONL input (repeatable)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a local one)")
    ap.add_argument("--num-cpus", type=int, default=None, help="local cluster's CPUs")
    ap.add_argument("--gpus-per-shard", type=int, default=None, help="default: 1 when the cluster has GPUs")
    ap.add_argument("--cpus-per-shard", type=int, default=1)
    ap.add_argument("--retries", type=int, default=2, help="Ray retries of a task whose worker died")
    ap.add_argument("--id-field", default="_id,id")
    ap.add_argument("--indexer", default=os.path.join(os.path.dirname(HERE), "bin", "indexer"))
    a = ap.parse_args(argv)
    n = a.shards
    if n < 1:
        ap.error("--shards must be at least 1")

    import ray
    set_dir = os.path.abspath(a.set)
    indexer = os.path.abspath(a.indexer)
    inputs = [os.path.abspath(p) for p in a.input]
    ray.init(address=a.address, num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": HERE}})
    gpus = a.gpus_per_shard
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    os.makedirs(set_dir, exist_ok=True)
    gen = shardset.next_generation(set_dir)
    gdir = shardset.gen_dir(set_dir, gen)
    os.makedirs(gdir, exist_ok=True)
    t0 = time.time()
    say = lambda msg: print("ray_index: %6.1f s  generation %d: %s" % (time.time() - t0, gen, msg),
                            file=sys.stderr, flush=True)
    fields = a.id_field.split(",")

    split = ray.remote(max_retries=a.retries)(split_input)
    counts = ray.get([split.remote(p, j, n, gdir, fields) for j, p in enumerate(inputs)])
    per = [sum(c[i] for c in counts if c[i] is not None) for i in range(n)]
    say("split %d input%s into %d shards (%s lines this run)" % (len(inputs), "s" if len(inputs) > 1 else "", n,
                                                                 "/".join(map(str, per))))

    task = ray.remote(index_shard).options(num_cpus=a.cpus_per_shard, num_gpus=gpus, max_retries=a.retries)
    pending = {task.remote(i, n, gdir, shardset.shard_store(set_dir, gen, i), len(inputs), indexer, opts, gpus,
                           a.cpus_per_shard): i for i in range(n)}
    failed, last = [], 0.0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        for ref in done:
            i = pending.pop(ref)
            try:
                _, rc, summary = ray.get(ref)
            except Exception as e:  # the task failed for good (retries spent)
                rc, summary = 1, [str(e).splitlines()[0] if str(e) else repr(e)]
            say("shard %d/%d %s: %s" % (i, n, "done" if rc == 0 else "FAILED", " | ".join(summary)))
            if rc:
                failed.append(i)
        if pending and time.time() - last >= 5:
            last = time.time()
            say("%d/%d shards done; " % (n - len(pending), n) +
                "; ".join("shard %d: %s" % (i, last_progress(gdir, i)) for i in sorted(pending.values())))
    if failed:
        say("shard%s %s failed: rerun the same command to resume" % ("s" if len(failed) > 1 else "",
                                                                     ",".join(map(str, sorted(failed)))))
        return 1
    man = shardset.publish(set_dir, gen, n, indexer)
    shutil.rmtree(os.path.join(gdir, "parts"), ignore_errors=True)  # published: no resume needs them
    say("published %s (%d stores)" % (os.path.join(set_dir, shardset.MANIFEST), len(man["stores"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
