"""test_indexer.py — the indexer and search end to end, hunting for ways to lose or corrupt
stored documents: add / skip-unchanged / update / delete / prune, windows, bad inputs (each
with a one-line error naming file:line or the id), a model mismatch, SIGTERM and >= 20
SIGKILLs at random moments (the store must open, hold no partial document, and a rerun must
finish without duplicates), searches running while the indexer commits and while --rebuild
swaps stores, and a disk that fills up. Corpora are tiny so the ASan pass stays fast.

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model is missing."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from refcheck import BIN, INDEXER, MODEL, ROOT, SEARCH, check, failures, run  # noqa: F401 (test_indexer_input imports them from here)

# The indexer's default device is auto (GPU when usable); these tests are about the store,
# so they pin the CPU and stay independent of whatever Vulkan driver the machine has.
DEV = ["--device", "cpu"]


def index(store, *args, input=None):
    return run([INDEXER, "--store", store, "--model", MODEL, *DEV, *args], input=input)


def summary(err):
    """Counts from the indexer's final summary line."""
    for line in err.splitlines():
        if ": added " in line:
            out = {}
            body = line.split(": added ", 1)[1]
            body = "added " + body.split(";")[0]
            for part in body.split(", "):
                k, v = part.split(" ")
                out[k] = int(v)
            return out
    return None


def stats(store):
    rc, out, err = run([INDEXER, "--store", store, "--check"])
    check(rc == 0, f"store check of {store}: {err.strip()}")
    if rc:
        return None
    # "store DIR: ok; N documents, R rows, ..."
    body = out.split("ok; ", 1)[1]
    docs = int(body.split(" documents")[0])
    rows = int(body.split(", ")[1].split(" rows")[0])
    return docs, rows


def search_all(store, query="anything", k=1000):
    rc, out, err = run([SEARCH, "--store", store, "--json", "--k", str(k), "--snippet", "100000", query])
    check(rc == 0, f"search failed: {err.strip()}")
    return json.loads(out)["results"] if rc == 0 else []


def interactive(store, lines, home):
    """Drives search's prompt through a pseudo-terminal; returns everything it printed."""
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([SEARCH, "--store", store], stdin=slave, stdout=slave, stderr=slave,
                         env={**os.environ, "HOME": home}, close_fds=True)
    os.close(slave)
    out = b""
    pending = list(lines)
    deadline = time.time() + 120
    import select
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            # Answer each prompt with the next line.
            while pending and out.count(b"search> ") > len(lines) - len(pending):
                os.write(master, (pending.pop(0) + "\n").encode())
        elif p.poll() is not None:
            break
    p.wait(timeout=30)
    os.close(master)
    return out.decode("utf-8", "replace")


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")


WORDS = ("alpha beta gamma delta protein cell gene river mountain ocean music theory "
         "engine vector store window token query search index batch commit").split()


def doc_text(i, version=0):
    r = random.Random(i * 1000 + version)
    return f"document {i} version {version} " + " ".join(r.choice(WORDS) for _ in range(8))


def test_basic(tmp):
    store = os.path.join(tmp, "basic")
    src = os.path.join(tmp, "basic.jsonl")
    docs = [{"_id": f"d{i}", "title": f"Title {i}", "text": doc_text(i), "metadata": {"n": i}} for i in range(6)]
    docs[2]["text"] = "The cat sat on the warm windowsill in the afternoon sun."
    write_jsonl(src, docs)
    rc, out, err = index(store, src)
    check(rc == 0, f"first index: {err}")
    s = summary(err)
    check(s and s["added"] == 6 and s["failed"] == 0, f"first summary {s}")
    check(os.path.islink(store), "store path is a symlink to a versioned directory")
    # One-shot search finds the cat; JSON has the fields; TREC lines are well formed.
    rc, out, err = run([SEARCH, "--store", store, "--k", "2", "--json", "where did the cat sit?"])
    check(rc == 0, f"search: {err}")
    res = json.loads(out)["results"]
    check(res[0]["id"] == "d2" and res[0]["title"] == "Title 2" and "windowsill" in res[0]["snippet"]
          and res[0]["metadata"] == {"n": 2} and res[0]["rank"] == 1, f"json result {res[:1]}")
    rc, out, _ = run([SEARCH, "--store", store, "--k", "3", "kitten on a windowsill"])
    check(rc == 0 and out.splitlines()[0].split()[2] == "d2", f"text output {out!r}")
    qf = os.path.join(tmp, "q.jsonl")
    write_jsonl(qf, [{"_id": "q1", "text": "cat in the sun"}, {"id": 7, "text": "gene protein"}])
    rc, out, err = run([SEARCH, "--store", store, "--queries", qf, "--format", "trec", "--k", "3", "--run-name", "t"])
    lines = out.splitlines()
    check(rc == 0 and len(lines) == 6 and lines[0].startswith("q1 Q0 d2 1 ") and lines[0].endswith(" t")
          and lines[3].startswith("7 Q0 "), f"trec output {lines}")
    # Piped queries (not a TTY): one a line.
    rc, out, err = run([SEARCH, "--store", store, "--k", "1"], input="cat\nriver ocean\n")
    check(rc == 0 and out.count("  1  ") >= 0 and len([l for l in out.splitlines() if l.startswith("  1")]) == 2,
          f"stdin queries {out!r}")

    # Interactive prompt on a terminal (libedit): :k and :json commands, then a query.
    out = interactive(store, [":k 1", ":json", "cat on the windowsill", ":q"], tmp)
    check('"id":"d2"' in out.replace(" ", "") and out.count('"rank"') == 1, f"interactive session: {out[-800:]!r}")

    # Rerun: nothing re-embedded.
    rc, out, err = index(store, src)
    s = summary(err)
    check(rc == 0 and s["unchanged"] == 6 and s["added"] == 0 and "windows" in err and " 0 windows" in err,
          f"rerun {s} {err}")
    # Update one, add one, from stdin.
    docs[1]["text"] = doc_text(1, 1)
    docs.append({"id": "d6", "text": doc_text(6)})
    rc, out, err = index(store, "-", input="".join(json.dumps(d) + "\n" for d in docs))
    s = summary(err)
    check(rc == 0 and s["updated"] == 1 and s["added"] == 1 and s["unchanged"] == 5, f"update {s} {err}")
    got = {r["id"]: r for r in search_all(store)}
    check(got.get("d1", {}).get("snippet") == doc_text(1, 1), "updated text stored")
    check(stats(store) == (7, 7), "7 docs 7 rows")
    # Delete.
    rc, out, err = index(store, "--delete", "d0", "--delete", "nope")
    s = summary(err)
    check(rc == 0 and s["deleted"] == 1 and "not in the store" in err, f"delete {s} {err}")
    check(stats(store) == (6, 6), "after delete")
    # Prune: inputs hold only d1..d3.
    write_jsonl(src, docs[1:4])
    rc, out, err = index(store, "--prune", src)
    s = summary(err)
    check(rc == 0 and s["deleted"] == 3 and s["unchanged"] == 3, f"prune {s} {err}")
    check(sorted(r["id"] for r in search_all(store)) == ["d1", "d2", "d3"], "pruned contents")


def test_windows_and_tree(tmp):
    store = os.path.join(tmp, "tree")
    tree = os.path.join(tmp, "tree-src")
    os.makedirs(os.path.join(tree, "sub"))
    long_words = []
    for i in range(60):
        long_words.append(f"filler{i % 7} sentence number {i} about nothing special.")
    long_words.append("Finally the lighthouse keeper painted the tower bright red.")
    with open(os.path.join(tree, "sub", "long.md"), "w") as f:
        f.write("# A long note\n\n" + " ".join(long_words) + "\n")
    with open(os.path.join(tree, "short.txt"), "w") as f:
        f.write("Bananas are yellow fruit.\n")
    with open(os.path.join(tree, "image.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with open(os.path.join(tree, ".hidden.txt"), "w") as f:
        f.write("hidden files are not indexed")
    rc, out, err = index(store, "--window", "32", tree)
    s = summary(err)
    check(rc == 0 and s["added"] == 2 and "image.png: binary file" in err and "ignored 1" in err,
          f"tree index {s} {err}")
    docs, rows = stats(store)
    check(docs == 2 and rows > 10, f"windows: {docs} docs, {rows} rows")
    rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "2", "who painted the lighthouse red?"])
    res = json.loads(out)["results"]
    check(res[0]["id"] == "sub/long.md" and res[0]["title"] == "A long note" and res[0]["window"] > 0
          and "lighthouse" in res[0]["snippet"] and len(res) == 2, f"best window {res}")
    # Changing the window recipe re-embeds everything.
    rc, out, err = index(store, "--window", "48", tree)
    s = summary(err)
    check(rc == 0 and s["updated"] == 2, f"recipe change {s}")


def test_bad_inputs(tmp):
    store = os.path.join(tmp, "bad")
    good = os.path.join(tmp, "good.jsonl")
    write_jsonl(good, [{"_id": "g1", "text": "first good document"}, {"_id": "g2", "text": "second good one"}])
    rc, _, err = index(store, good)
    check(rc == 0, "good index")
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"_id": "b1", "text": "fine"}\n')
        f.write('{"_id": "b2", "text": "broken\n')           # line 2: malformed
        f.write('{"_id": "b3", "text": ""}\n')               # line 3: empty, embedded as [CLS] [SEP]
        f.write('{"_id": "b1", "text": "again"}\n')          # line 4: duplicate id
        f.write('{"text": "no id"}\n')                        # line 5: no id
        f.write('{"_id": "b6", "text": 5}\n')                 # line 6: text not a string
        f.write('{"_id": "b7", "text": "bad utf8 \xff"}\n'.encode("latin-1").decode("latin-1"))
        f.write('{"_id": "b8", "text": "last fine one"}\n')
    # Line 7 written as latin-1 text: make it real invalid UTF-8 bytes.
    raw = open(bad, "rb").read().replace("\xff".encode("utf-8"), b"\xff")
    open(bad, "wb").write(raw)
    rc, _, err = index(store, bad)
    check(rc == 1 and f"{bad}:2: malformed JSON" in err, f"malformed stops with file:line: {err}")
    check(stats(store) == (3, 3), "docs before the bad line kept, nothing lost")
    rc, _, err = index(store, "--skip-bad", bad)
    s = summary(err)
    check(rc == 0 and s["failed"] == 5 and s["empty"] == 1, f"skip-bad counts {s} {err}")
    for needle in (f"{bad}:2:", f"{bad}:4: duplicate id 'b1'",
                   f"{bad}:5: no document id", f"{bad}:6: document 'b6'", f"{bad}:7:"):
        check(needle in err, f"error message names the place: {needle!r} in {err}")
    check(stats(store) == (5, 5), "g1 g2 b1 b3 b8")
    # --prune with a bad new version of a stored document keeps the stored version.
    write_jsonl(good, [{"_id": "g1", "text": "first good document"}, {"_id": "g2", "text": ["not", "a string"]}])
    rc, _, err = index(store, "--prune", "--skip-bad", good)
    s = summary(err)
    check(rc == 0 and s["deleted"] == 3 and s["failed"] == 1, f"prune keeps bad doc's old version {s} {err}")
    got = {r["id"]: r["snippet"] for r in search_all(store)}
    check(got == {"g1": "first good document", "g2": "second good one"}, f"after prune: {got}")
    # A text file with invalid UTF-8.
    tdir = os.path.join(tmp, "utf")
    os.makedirs(tdir)
    open(os.path.join(tdir, "x.txt"), "wb").write(b"caf\xe9 au lait")
    rc, _, err = index(store, tdir)
    check(rc == 1 and "x.txt: invalid UTF-8 at byte 3" in err, f"invalid utf-8 file: {err}")
    check(stats(store) == (2, 2), "still intact")
    # A missing input, an unknown option.
    rc, _, err = index(store, os.path.join(tmp, "missing.jsonl"))
    check(rc == 1 and "missing.jsonl: No such file" in err, f"missing file: {err}")
    rc, _, err = index(store, "--bogus", good)
    check(rc == 2, "usage error")


def test_model_mismatch(tmp):
    store = os.path.join(tmp, "mm")
    src = os.path.join(tmp, "mm.jsonl")
    write_jsonl(src, [{"_id": "a", "text": "some text"}])
    check(index(store, src)[0] == 0, "mm index")
    other = os.path.join(tmp, "other-model")
    os.makedirs(other)
    for name in os.listdir(MODEL):
        p = os.path.join(MODEL, name)
        if name == "sentence_bert_config.json":
            cfg = json.load(open(p))
            cfg["max_seq_length"] = 128
            json.dump(cfg, open(os.path.join(other, name), "w"))
        else:
            os.symlink(p, os.path.join(other, name))
    rc, _, err = run([INDEXER, "--store", store, "--model", other, *DEV, src])
    check(rc == 1 and "was built with model" in err and "128 tokens" in err, f"mismatch refused: {err}")
    check(stats(store) == (1, 1), "mismatch left the store alone")


def corpus_for_kills(path, n, version=0):
    write_jsonl(path, [{"_id": f"k{i:03d}", "title": f"T{i} v{version}", "text": doc_text(i, version)}
                       for i in range(n)])


def check_no_partial(store, n_expected=None):
    """Every stored document is wholly one version: its text and title agree."""
    res = search_all(store)
    ids = [r["id"] for r in res]
    check(len(ids) == len(set(ids)), "no duplicate documents")
    for r in res:
        i = int(r["id"][1:])
        v = int(r["title"].rsplit(" v", 1)[1]) if " v" in r["title"] else -1
        check(r["snippet"] == doc_text(i, v) and r["title"] == f"T{i} v{v}", f"document {r['id']} whole: {r}")
    if n_expected is not None:
        check(len(ids) == n_expected, f"{len(ids)} documents, expected {n_expected}")
    return ids


def test_kill(tmp):
    store = os.path.join(tmp, "kill")
    srcs = [os.path.join(tmp, f"kill{v}.jsonl") for v in (0, 1)]
    N = 60
    for v, p in enumerate(srcs):
        corpus_for_kills(p, N, v)
    rnd = random.Random(12345)
    # Calibrate: how long does a full run take here (ASan makes it slower)?
    t0 = time.time()
    rc, _, err = index(os.path.join(tmp, "calib"), "--window-docs", "2", srcs[0])
    full = time.time() - t0
    check(rc == 0, f"calibration run {err}")
    # Runs alternate between two versions of every document, so each run rewrites the store
    # (updates delete old rows and move others into the holes) and a kill lands mid-rewrite.
    kills = runs = 0
    while kills < 22 and runs < 60:
        src = srcs[runs % 2]
        runs += 1
        t1 = time.time()
        p = subprocess.Popen([INDEXER, "--store", store, "--model", MODEL, *DEV, "--window-docs", "2", "--quiet", src],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.2, 1.0) * full)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        else:
            # it finished first: the calibration run was slower than runs are now (it
            # shared the cores with other tests), so aim within this run's length
            full = min(full, time.time() - t1)
        p.wait()
        if os.path.exists(store):
            st = stats(store)
            check(st is not None and st[0] == st[1], f"run {runs}: rows == docs: {st}")
            if st and st[0] and kills % 4 == 0:
                check_no_partial(store)
    check(kills >= 20, f"{kills} SIGKILLs landed (want >= 20)")
    rc, _, err = index(store, srcs[0])
    check(rc == 0, f"rerun after kills: {err}")
    ids = check_no_partial(store, N)
    res = search_all(store)
    check(all(r["title"].endswith(" v0") for r in res), "rerun brought every document to the input's version")
    # SIGTERM: finish the batch, commit, exit 143; rerun completes.
    store2 = os.path.join(tmp, "term")
    p = subprocess.Popen([INDEXER, "--store", store2, "--model", MODEL, *DEV, "--window-docs", "2", srcs[0]],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(full * 0.6)
    p.send_signal(signal.SIGTERM)
    err = p.communicate()[1]
    check(p.returncode in (143, 0), f"SIGTERM exit {p.returncode}")
    if p.returncode == 143:
        check("interrupted" in err, f"summary says interrupted: {err}")
    rc, _, err = index(store2, srcs[0])
    s = summary(err)
    check(rc == 0 and s["added"] + s["unchanged"] == N, f"resume after SIGTERM {s}")
    check_no_partial(store2, N)


def test_concurrent(tmp):
    """Searches while the indexer commits, and while --rebuild swaps the store in."""
    store = os.path.join(tmp, "conc")
    src = os.path.join(tmp, "conc.jsonl")
    corpus_for_kills(src, 40)
    seed = os.path.join(tmp, "seed.jsonl")
    write_jsonl(seed, [{"_id": "k999", "title": "T999 v0", "text": doc_text(999)}])
    check(index(store, seed)[0] == 0, "seed")
    stop = threading.Event()
    results = []

    def searcher():
        while not stop.is_set():
            rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "1000", "--snippet", "100000", "gene"])
            ok = rc == 0
            if ok:
                res = json.loads(out)["results"]
                ids = [r["id"] for r in res]
                ok = len(ids) == len(set(ids)) and all(r["snippet"] == doc_text(int(r["id"][1:])) for r in res)
            results.append((ok, err.strip()))

    th = threading.Thread(target=searcher)
    th.start()
    rc, _, err = index(store, "--window-docs", "1", src)
    check(rc == 0, f"indexing while searching: {err}")
    for i in range(3):
        rc, _, err = index(store, "--rebuild", src if i % 2 == 0 else seed)
        check(rc == 0, f"rebuild {i}: {err}")
    stop.set()
    th.join()
    bad = [e for ok, e in results if not ok]
    check(len(results) >= 3 and not bad, f"{len(results)} concurrent searches, failures: {bad[:3]}")
    # Only the live version directory is left beside the link.
    parent = os.path.dirname(store)
    versions = [n for n in os.listdir(parent) if n.startswith(".conc.") and not n.endswith(".lock")]
    check(len(versions) == 1, f"old versions removed: {versions}")
    check(stats(store) == (40, 40), "the last rebuild is live")


def test_disk_full(tmp):
    mnt = os.path.join(tmp, "small")
    os.makedirs(mnt)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) != 0:
        print("disk-full: cannot mount a tmpfs here; covered by test_store's RLIMIT_FSIZE case")
        return
    try:
        store = os.path.join(mnt, "s")
        small = os.path.join(tmp, "small.jsonl")
        write_jsonl(small, [{"_id": "s1", "text": "a small document that fits"}])
        check(index(store, small)[0] == 0, "small index on tmpfs")
        big = os.path.join(tmp, "big.jsonl")
        r = random.Random(1)
        # Incompressible text, one 8-token window each: the disk fills long before the CPU tires.
        write_jsonl(big, [{"_id": f"big{i}", "text": " ".join("%x" % r.getrandbits(64) for _ in range(250))}
                          for i in range(400)])
        rc, _, err = index(store, "--window", "8", "--truncate", "--window-docs", "40", big)
        check(rc == 1 and ("disk full" in err or "nothing of this batch was stored" in err), f"disk full: {err[-600:]}")
        st = stats(store)
        check(st is not None and st[0] >= 1, "store opens after the disk filled up")
        rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "1000", "small document"])
        check(rc == 0 and any(x["id"] == "s1" for x in json.loads(out)["results"]), "earlier document kept")
    finally:
        subprocess.call(["umount", mnt])


def main():
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        print("model not fetched (.cache/models/all-MiniLM-L6-v2)")
        sys.exit(77)
    for exe in (INDEXER, SEARCH):
        if not os.access(exe, os.X_OK):
            print(f"{exe} not built")
            sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="test_indexer.")
    try:
        for t in (test_basic, test_windows_and_tree, test_bad_inputs, test_model_mismatch, test_kill,
                  test_concurrent, test_disk_full):
            t0 = time.time()
            t(tmp)
            print(f"{t.__name__}: {time.time() - t0:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("test_indexer: ok")


if __name__ == "__main__":
    main()
