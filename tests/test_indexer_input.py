"""test_indexer_input.py — the indexer's input edge: a signal or a read error while reading
stdin commits what was read; --prune --skip-bad keeps the stored version of a document whose
new record is bad, and refuses to prune when a bad record's id cannot be read; a record over
the cap (--max-record-bytes) is an error that holds no more than the cap in memory, and
--threads has a limit; empty documents are embedded as [CLS] [SEP] like sentence-transformers
does; ids are valid UTF-8 without control characters, from JSONL and from file names; a model
that gives non-finite vectors has its documents refused by id. Inputs are tiny, so the ASan
pass stays fast.

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model is missing."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import test_indexer
from test_indexer import (BIN, INDEXER, MODEL, ROOT, SEARCH, check, failures, search_all, stats,
                          summary, write_jsonl)


def clean(err):
    """Under ASan/UBSan an error report also exits 1, which some checks expect: look for it."""
    check("Sanitizer" not in err and "runtime error:" not in err, f"sanitizer report: {err[-3000:]}")


def run(args, input=None, timeout=300):
    rc, out, err = test_indexer.run(args, input=input, timeout=timeout)
    clean(err)
    return rc, out, err


def index(store, *args, input=None):
    rc, out, err = test_indexer.index(store, *args, input=input)
    clean(err)
    return rc, out, err

EMBED = os.path.join(BIN, "embed")


def wait_reading_stdin(pid, timeout=120):
    """Waits until pid sits in read(0, ...), i.e. it has taken everything the pipe held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            f = open(f"/proc/{pid}/syscall").read().split()
        except OSError:
            return False
        if len(f) > 1 and f[0] == "0" and int(f[1], 16) == 0:
            return True
        time.sleep(0.05)
    return False


def test_signal_and_read_error(tmp):
    docs = [{"_id": f"s{i}", "text": f"document {i} about rivers and mountains"} for i in range(30)]
    data = "".join(json.dumps(d) + "\n" for d in docs)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        store = os.path.join(tmp, f"sig{sig}")
        p = subprocess.Popen([INDEXER, "--store", store, "--model", MODEL, "--device", "cpu", "-"],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write(data)
        p.stdin.flush()  # stdin stays open: the indexer blocks reading the next line
        check(wait_reading_stdin(p.pid), "indexer never blocked on stdin")
        p.send_signal(sig)
        p.wait(timeout=120)  # stdin still open: only the signal can end the read
        err = p.stderr.read()
        p.stdin.close()
        clean(err)
        s = summary(err)
        check(p.returncode == code and s and s["added"] == 30 and "(null)" not in err,
              f"{sig.name} while reading stdin: rc {p.returncode}, {s}, {err}")
        check(stats(store) == (30, 30), f"{sig.name}: the batch in flight was committed")
    # SIGTERM while an endless line is being skipped (1 TB of a sparse file) stops at once.
    store = os.path.join(tmp, "endless")
    endless = os.path.join(tmp, "endless.jsonl")
    with open(endless, "wb") as f:
        f.write(json.dumps({"_id": "a", "text": "before the hole"}).encode() + b"\n")
        try:
            f.truncate(1 << 40)
        except OSError:
            f.truncate(64 << 30)
    p = subprocess.Popen([INDEXER, "--store", store, "--model", MODEL, "--device", "cpu", "--skip-bad", endless],
                         stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(120, p.kill)
    killer.start()
    err = ""
    while "record over the limit" not in err:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    err += p.stderr.read()
    p.wait()
    killer.cancel()
    clean(err)
    check(p.returncode == 143 and time.time() - t0 < 10 and f"{endless}:2: record over the limit" in err,
          f"SIGTERM while skipping a long line: rc {p.returncode} after {time.time() - t0:.1f} s, {err}")
    check(stats(store) == (1, 1), "the record before the endless line is committed")
    os.unlink(endless)
    # A read error on stdin (a directory) after a file: what was read is committed.
    store = os.path.join(tmp, "readerr")
    src = os.path.join(tmp, "readerr.jsonl")
    write_jsonl(src, docs[:5])
    d = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        p = subprocess.run([INDEXER, "--store", store, "--model", MODEL, "--device", "cpu", src, "-"],
                           stdin=d, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(d)
    clean(p.stderr)
    check(p.returncode == 1 and "<stdin>: read error: Is a directory" in p.stderr and "(null)" not in p.stderr,
          f"stdin a directory: rc {p.returncode}, {p.stderr}")
    check(stats(store) == (5, 5), "documents read before the read error are stored")


def test_prune_skip_bad(tmp):
    store = os.path.join(tmp, "prune")
    src = os.path.join(tmp, "prune.jsonl")
    old = {f"p{i}": f"old version of document {i}" for i in range(6)}
    write_jsonl(src, [{"_id": k, "text": v} for k, v in old.items()])
    rc, _, err = index(store, src)
    check(rc == 0 and stats(store) == (6, 6), f"first index: {err}")
    # Bad new records whose id can be read keep their stored versions; p5 is gone from the input.
    with open(src, "w") as f:
        f.write(json.dumps({"_id": "p0", "text": "old version of document 0"}) + "\n")
        f.write(json.dumps({"_id": "p1", "text": 5}) + "\n")
        f.write(json.dumps({"_id": "p2", "text": "fine", "title": ["no"]}) + "\n")
        f.write(json.dumps({"_id": "p3"}) + "\n")
        f.write(json.dumps({"_id": "p4\ttab", "text": "an id with a tab"}) + "\n")
        f.write(json.dumps({"_id": "p4", "text": "x" * 300}) + "\n")  # over the cap below
    rc, _, err = index(store, "--prune", "--skip-bad", "--max-record-bytes", "200", src)
    s = summary(err)
    check(rc == 1 and s and s["deleted"] == 0 and "--prune refused" in err and f"{src}:6: record over" in err,
          f"over-cap record without a readable id refuses prune: rc {rc} {s} {err}")
    check(stats(store) == (6, 6), "nothing deleted when prune is refused")
    rc, _, err = index(store, "--prune", "--skip-bad", src)
    s = summary(err)
    check(rc == 0 and s and s["deleted"] == 1 and s["failed"] == 4 and s["updated"] == 1,
          f"prune with bad records whose ids are readable: rc {rc} {s} {err}")
    got = {r["id"]: r["snippet"] for r in search_all(store)}
    check(got == {"p0": old["p0"], "p1": old["p1"], "p2": old["p2"], "p3": old["p3"], "p4": "x" * 300},
          f"stored versions of bad records kept, p5 pruned: {sorted(got)}")
    # A record whose id cannot be read: prune does not run at all.
    for name, line in (("cut", b'{"_id": "p0", "text": "cut off'),
                       ("utf8", b'{"_id": "p0", "text": "caf\xe9"}'),
                       ("noid", b'{"text": "no id here"}')):
        bad = os.path.join(tmp, f"prune-{name}.jsonl")
        with open(bad, "wb") as f:
            f.write(json.dumps({"_id": "p1", "text": "new p1"}).encode() + b"\n" + line + b"\n")
        rc, _, err = index(store, "--prune", "--skip-bad", bad)
        s = summary(err)
        check(rc == 1 and s and s["deleted"] == 0 and "--prune refused, nothing deleted" in err
              and f"{bad}:2:" in err, f"{name}: prune refused: rc {rc} {s} {err}")
        check(stats(store)[0] == 5, f"{name}: nothing deleted")
    check({r["id"]: r["snippet"] for r in search_all(store)}.get("p1") == "new p1",
          "good records of a refused prune are still indexed")


def test_rebuild_skip_bad(tmp):
    """--rebuild --skip-bad keeps what the live store holds under a bad record's id (the swap
    would drop it), and refuses when a bad record's id cannot be read."""
    store = os.path.join(tmp, "rebuild")
    src = os.path.join(tmp, "rebuild.jsonl")
    old = {f"r{i}": f"old version of document {i} about rebuilding" for i in range(4)}
    write_jsonl(src, [{"_id": k, "text": v, "title": f"t{k}"} for k, v in old.items()])
    rc, _, err = index(store, src)
    check(rc == 0 and stats(store) == (4, 4), f"first index: {err}")
    before = {r["id"]: r for r in search_all(store, old["r1"])}
    with open(src, "w") as f:
        f.write(json.dumps({"_id": "r0", "text": "new version of document 0"}) + "\n")
        f.write(json.dumps({"_id": "r1", "text": 5}) + "\n")            # bad, id readable
        f.write(json.dumps({"_id": "r2", "text": old["r2"], "title": "tr2"}) + "\n")
        f.write(json.dumps({"_id": "r9", "text": ["no"]}) + "\n")       # bad, nothing stored
    rc, _, err = index(store, "--rebuild", "--skip-bad", src)
    s = summary(err)
    check(rc == 0 and s and s["failed"] == 2 and "kept the stored version of 1 document" in err,
          f"rebuild with a bad record: rc {rc} {s} {err}")
    after = {r["id"]: r for r in search_all(store, old["r1"])}
    check(sorted(after) == ["r0", "r1", "r2"], f"r1 kept, r3 gone, r9 never stored: {sorted(after)}")
    check(after.get("r1", {}).get("snippet") == old["r1"] and after["r1"].get("title") == "tr1",
          f"r1's old text and title kept: {after.get('r1')}")
    # the kept vector is the stored one: the query (r1's own text) scores it as before
    check(abs(after.get("r1", {}).get("score", 0) - before["r1"]["score"]) < 1e-6,
          f"r1's vector kept: {before['r1']} -> {after.get('r1')}")
    ok, out_err = run([INDEXER, "--store", store, "--check"])[0::2]
    check(ok == 0, f"rebuilt store checks: {out_err}")
    # A bad record whose id cannot be read: the rebuild is refused and the store unchanged.
    with open(src, "ab") as f:
        f.write(b'{"_id": "r2", "text": "cut off\n')
    rc, _, err = index(store, "--rebuild", "--skip-bad", src)
    check(rc == 1 and "--rebuild refused" in err and "rebuild abandoned" in err,
          f"rebuild with an unreadable id refused: rc {rc} {err}")
    check(sorted(r["id"] for r in search_all(store)) == ["r0", "r1", "r2"], "store unchanged")


def rss_mb(err):
    for line in err.splitlines():
        if "peak RSS " in line:
            return float(line.split("peak RSS ")[1].split(" MB")[0])
    return None


def test_record_cap(tmp):
    store = os.path.join(tmp, "cap")
    small = os.path.join(tmp, "cap-small.jsonl")
    write_jsonl(small, [{"_id": "c0", "text": "a small document"}])
    rc, _, err = index(store, small)
    base = rss_mb(err)
    check(rc == 0 and base, f"small run: {err}")
    # Line 2 is a 256 MB hole (NUL bytes, sparse on disk), over the default 64 MB cap.
    big = os.path.join(tmp, "cap-big.jsonl")
    hole = 256 << 20
    with open(big, "wb") as f:
        f.write(json.dumps({"_id": "c1", "text": "before the hole"}).encode() + b"\n")
        f.seek(hole, os.SEEK_CUR)
        f.write(b"\n" + json.dumps({"_id": "c3", "text": "after the hole"}).encode() + b"\n")
        f.write(b'{"_id": "c4", "text": broken}\n')
    rc, _, err = index(store, big)
    check(rc == 1 and f"{big}:2: record over the limit of {64 << 20} bytes (--max-record-bytes)" in err,
          f"over-cap line stops with FILE:LINE: rc {rc} {err}")
    check(stats(store) == (2, 2), "the record before the long line is committed")
    # Memory: the reader holds at most the cap, never the 256 MB line. Measured with a 16 MB
    # cap: the line buffer grows by doubling, and under ASan every smaller buffer stays in the
    # quarantine (about twice the cap), while the small run's own peak is the model's load.
    cap = str(16 << 20)
    rc, _, err = index(store, "--max-record-bytes", cap, big)
    rss = rss_mb(err)
    check(rc == 1 and rss is not None and rss < base + 100,
          f"peak RSS {rss} MB with a 256 MB line, 16 MB cap (small run {base} MB): rc {rc}")
    rc, _, err = index(store, "--skip-bad", big)
    s = summary(err)
    check(rc == 0 and s and s["failed"] == 2 and s["added"] == 1 and f"{big}:4: malformed JSON" in err,
          f"--skip-bad reads on after the long line, line numbers right: rc {rc} {s} {err}")
    rc, _, err = index(store, "--skip-bad", "--max-record-bytes", cap, big)
    check(rc == 0 and rss_mb(err) < base + 100, f"peak RSS with --skip-bad {rss_mb(err)} MB")
    check(stats(store) == (3, 3), "c0 c1 c3")
    # A small cap, on JSONL and on a text file.
    rc, _, err = index(store, "--max-record-bytes", "20", big)
    check(rc == 1 and f"{big}:1: record over the limit of 20 bytes" in err, f"small cap: {err}")
    tdir = os.path.join(tmp, "cap-tree")
    os.makedirs(tdir)
    open(os.path.join(tdir, "long.txt"), "w").write("word " * 100)
    rc, _, err = index(store, "--max-record-bytes", "400", tdir)
    check(rc == 1 and "long.txt: 500 bytes is over the record limit of 400 bytes" in err, f"text file cap: {err}")
    # Option limits: refused before the model is loaded.
    for args, needle in ((["--threads", "1025"], "--threads needs an integer from 0 to 1024"),
                         (["--threads", "99999999999"], "--threads needs an integer"),
                         (["--max-record-bytes", "0"], "--max-record-bytes needs an integer from 1"),
                         (["--max-record-bytes", "12x"], "--max-record-bytes needs an integer")):
        t0 = time.time()
        rc, _, err = index(store, *args, small)
        check(rc == 2 and needle in err and time.time() - t0 < 10, f"{args}: rc {rc} {err}")


def embed_vectors(texts):
    p = subprocess.run([EMBED, "--model", MODEL, "--device", "cpu", "--jsonl"],
                       input="".join(json.dumps({"text": t}) + "\n" for t in texts),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    check(p.returncode == 0, f"embed: {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines()]


def st_reference(text):
    """sentence-transformers' vector of text from tests/data, or None."""
    prefix = os.path.join(ROOT, "tests", "data", "ref-all-MiniLM-L6-v2")
    lines = open(prefix + ".jsonl", encoding="utf-8").read().splitlines()
    dim = json.loads(lines[0])["generator"]["dim"]
    texts = [json.loads(l)["text"] for l in lines[1:]]
    if text not in texts:
        return None
    raw = open(prefix + ".f32", "rb").read()
    return list(struct.unpack_from("<%df" % dim, raw, 4 * dim * texts.index(text)))


def test_empty(tmp):
    store = os.path.join(tmp, "empty")
    src = os.path.join(tmp, "empty.jsonl")
    write_jsonl(src, [{"_id": "e1", "text": ""}, {"_id": "e2", "text": " \n\t "},
                      {"_id": "e3", "text": "", "title": "Lighthouse keepers"},
                      {"_id": "n1", "text": "rivers run to the sea"}])
    rc, _, err = index(store, src)
    s = summary(err)
    check(rc == 0 and s and s["added"] == 4 and s["empty"] == 2 and s["failed"] == 0,
          f"empty documents are indexed and counted: rc {rc} {s} {err}")
    ref = st_reference("")
    check(ref is not None, "tests/data holds sentence-transformers' vector of ''")
    q = "where do rivers go?"
    qv, ev, tv = embed_vectors([q, "", "Lighthouse keepers"])
    want = {"e1": sum(a * b for a, b in zip(qv, ref or ev)), "e2": sum(a * b for a, b in zip(qv, ref or ev)),
            "e3": sum(a * b for a, b in zip(qv, tv))}
    rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "10", q])
    got = {r["id"]: r["score"] for r in json.loads(out)["results"]} if rc == 0 else {}
    for k, v in want.items():
        check(k in got and abs(got[k] - v) < 1e-4, f"{k}: score {got.get(k)} against {v:.6f} from the reference")
    rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "2", ""])
    top = json.loads(out)["results"] if rc == 0 else []
    check(sorted(r["id"] for r in top) == ["e1", "e2"] and all(r["score"] > 0.9999 for r in top),
          f"the empty query finds the empty documents: {top}")


def test_ids(tmp):
    store = os.path.join(tmp, "ids")
    src = os.path.join(tmp, "ids.jsonl")
    write_jsonl(src, [{"_id": "ok1", "text": "a fine document"},
                      {"_id": "tab\there", "text": "tab"},
                      {"_id": "new\nline", "text": "newline"},
                      {"_id": "c1\u0085", "text": "C1 control"},
                      {"_id": "bell\u0007", "text": "bell"},
                      {"_id": 42, "text": "an integer id"},
                      {"_id": "caf\u00e9-\u2603", "text": "unicode is fine"}])
    rc, _, err = index(store, src)
    check(rc == 1 and f'{src}:2: document id "tab\\x09here" holds a control character (U+0009 at byte 3)' in err
          and "--skip-bad skips" in err, f"tab in an id stops with FILE:LINE and names --skip-bad: {err}")
    rc, _, err = index(store, "--skip-bad", src)
    s = summary(err)
    check(rc == 0 and s and s["failed"] == 4, f"bad ids skipped: {s} {err}")
    for n, needle in ((3, '"new\\x0Aline" holds a control character (U+000A'), (4, "(U+0085 at byte 2)"),
                      (5, "(U+0007 at byte 4)")):
        check(f"{src}:{n}: document id " in err and needle in err, f"line {n}: {needle} in {err}")
    tree = os.fsencode(os.path.join(tmp, "ids-tree"))
    os.makedirs(tree)
    open(os.path.join(tree, b"caf\xe9.txt"), "wb").write(b"latin-1 file name")
    open(os.path.join(tree, b"tab\tname.txt"), "wb").write(b"a tab in the file name")
    open(os.path.join(tree, b"good.txt"), "wb").write(b"a good file")
    rc, _, err = index(store, "--skip-bad", os.fsdecode(tree))
    s = summary(err)
    check(rc == 0 and s and s["failed"] == 2 and s["added"] == 1
          and 'caf\\xE9.txt: file name "caf\\xE9.txt" is not valid UTF-8 (byte 3)' in err
          and 'file name "tab\\x09name.txt" holds a control character' in err, f"file names: {s} {err}")
    res = search_all(store)
    ids = sorted(str(r.get("id")) for r in res)  # no "id" key: a file name that is not UTF-8
    check(ids == sorted(["ok1", "42", "caf\u00e9-\u2603", "good.txt"]), f"stored ids: {ids}")
    rc, out, _ = run([SEARCH, "--store", store, "--format", "trec", "--k", "10", "document"])
    check(rc == 0 and all(len(l.split(" ")) == 6 for l in out.splitlines()), f"TREC lines: {out!r}")


def test_nonfinite(tmp):
    """A model whose last LayerNorm has a NaN weight: every vector is NaN (nothing on the way
    computes an exponential of it), and every document is refused by id."""
    mdir = os.path.join(tmp, "nan-model")
    os.makedirs(mdir)
    for name in os.listdir(MODEL):
        if name != "model.safetensors":
            os.symlink(os.path.join(MODEL, name), os.path.join(mdir, name))
    raw = bytearray(open(os.path.join(MODEL, "model.safetensors"), "rb").read())
    n = struct.unpack_from("<Q", raw, 0)[0]
    header = json.loads(raw[8:8 + n])
    t = header["encoder.layer.5.output.LayerNorm.weight"]
    struct.pack_into("<f", raw, 8 + n + t["data_offsets"][0] + 4 * 7, float("nan"))
    open(os.path.join(mdir, "model.safetensors"), "wb").write(raw)
    src = os.path.join(tmp, "nan.jsonl")
    write_jsonl(src, [{"_id": "v1", "text": "first"}, {"_id": "v2", "text": "second"}])
    store = os.path.join(tmp, "nan-store")
    rc, _, err = run([INDEXER, "--store", store, "--model", mdir, "--device", "cpu", src])
    check(rc == 1 and f"{src}:1: document 'v1': the model gave a non-finite vector (window 1 of 1)" in err,
          f"NaN vector refused naming the document: rc {rc} {err}")
    rc, _, err = run([INDEXER, "--store", store, "--model", mdir, "--device", "cpu", "--skip-bad", src])
    s = summary(err)
    check(rc == 0 and s and s["failed"] == 2 and s["added"] == 0 and f"{src}:2: document 'v2'" in err,
          f"--skip-bad skips NaN documents: rc {rc} {s} {err}")
    st = stats(store)
    check(st is not None and st[0] == 0, f"no NaN vector stored: {st}")


def main():
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        print("model not fetched (.cache/models/all-MiniLM-L6-v2)")
        sys.exit(77)
    for exe in (INDEXER, SEARCH, EMBED):
        if not os.access(exe, os.X_OK):
            print(f"{exe} not built")
            sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="test_indexer_input.")
    try:
        only = sys.argv[1:]
        for t in (test_signal_and_read_error, test_prune_skip_bad, test_rebuild_skip_bad, test_record_cap,
                  test_empty, test_ids, test_nonfinite):
            if only and t.__name__ not in only:
                continue
            t0 = time.time()
            t(tmp)
            print(f"{t.__name__}: {time.time() - t0:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("test_indexer_input: ok")


if __name__ == "__main__":
    main()
