"""Cross-encoders (engine/rerank.h, bin/rerank) against Hugging Face transformers'
BertForSequenceClassification and sentence-transformers' CrossEncoder
(tests/data/rerank-ref.jsonl, written by scripts/gen-rerank-reference in PyTorch, never by
this code) on directories in ms-marco-MiniLM-L-6-v2's shapes made by scripts/gen-cross-encoder
(the fetched all-MiniLM-L6-v2 encoder, generated token types, pooler and classifier):
  - logits within 1e-4 of transformers' on every pair, CrossEncoder.predict's scores within
    1e-4 (Sigmoid by default, Identity from the pre-v4 config key, Identity for 3 labels);
  - the "cls" and "mean" pooling choices against the classifier on transformers' own [CLS]
    row and mean hidden state; pair lengths after truncation equal transformers' (512, and a
    64-token model where most pairs are cut, often on both sides);
  - the comparison can fail: the reference logits of a query's documents spread far beyond
    the tolerance, and the wrong activation, pooling or maximum misses the reference;
  - bad input stops with one line naming FILE:LINE; a sentence-embedding directory is
    refused as "not a cross-encoder".
Skipped until scripts/fetch-model has run (the encoder's weights)."""
import json
import os
import subprocess
import sys
import tempfile

from refcheck import ASAN, BIN, MODEL, ROOT, check, failures, run, skip

RERANK = os.path.join(BIN, "rerank")
REF = os.path.join(ROOT, "tests/data/rerank-ref.jsonl")
TOL = 1e-4

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

lines = open(REF, encoding="utf-8").read().splitlines()
meta = json.loads(lines[0])["generator"]
recs = [json.loads(l) for l in lines[1:]]
ARGS = {"default": [], "legacy-identity": ["--activation", "legacy-identity"],
        "labels3": ["--labels", "3"], "max64": ["--max-length", "64"]}
# Under ASan (memory errors, not numbers, at a fraction of the speed) the 64-token model
# alone, where every path runs: truncation on both sides, the pooling choices, bad input.
EXTRAS, MAXT = ("max64", 64) if ASAN else ("default", 512)
if ASAN:
    ARGS = {"max64": ARGS["max64"]}


def flat(v):
    return [x for row in v for x in (row if isinstance(row, list) else [row])]


def score(d, rs, *args):
    inp = "".join(json.dumps({"query": r["query"], "documents": r["documents"]}) + "\n" for r in rs)
    rc, out, err = run([RERANK, "--model", d, "--threads", "2", *args], input=inp)
    assert rc == 0, f"bin/rerank {' '.join(args)} failed: {err}"
    return [json.loads(l) for l in out.splitlines()]


def worst(got, want):
    return max(abs(a - b) for a, b in zip(flat(got), flat(want)))


with tempfile.TemporaryDirectory() as tmp:
    for name, args in ARGS.items():
        d = os.path.join(tmp, name)
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen-cross-encoder"), d,
                        "--from", MODEL, *args], check=True, stdout=subprocess.DEVNULL)
        rs = [r for r in recs if r["variant"] == name]
        out = score(d, rs)
        pairs = sum(len(r["documents"]) for r in rs)
        dl = max(worst(o["logits"], r["logits"]) for o, r in zip(out, rs))
        ds = max(worst(o["scores"], r["st_scores"]) for o, r in zip(out, rs))
        spread = min(max(flat(r["logits"])) - min(flat(r["logits"])) for r in rs)
        print(f"{name}: {pairs} pairs: logits max |diff| {dl:.3g} vs transformers "
              f"{meta['transformers']}, scores {ds:.3g} vs CrossEncoder "
              f"(sentence-transformers {meta['sentence_transformers']}); reference spread "
              f"within a query >= {spread:.3g}")
        check(dl <= TOL, f"{name}: logits max |diff| {dl:.3g} > {TOL}")
        check(ds <= TOL, f"{name}: CrossEncoder scores max |diff| {ds:.3g} > {TOL}")
        check(spread > 100 * TOL, f"{name}: reference logits too alike ({spread:.3g}) to tell "
              "a broken model from a working one")
        for pool in ("cls", "mean") if name in (EXTRAS, "labels3") else ():
            o2 = score(d, rs[:2], "--pooling", pool)
            dp = max(worst(o["logits"], r["logits_" + pool]) for o, r in zip(o2, rs))
            print(f"{name}: --pooling {pool}: logits max |diff| {dp:.3g} vs the classifier "
                  "on transformers' hidden states")
            check(dp <= TOL, f"{name}: --pooling {pool}: max |diff| {dp:.3g} > {TOL}")
        rc, tout, err = run([RERANK, "--model", d, "--tokens"], input="".join(
            json.dumps({"query": r["query"], "documents": r["documents"]}) + "\n" for r in rs))
        assert rc == 0, err
        lens = [[len(p["ids"]) for p in json.loads(l)] for l in tout.splitlines()]
        check(lens == [r["tokens"] for r in rs], f"{name}: pair lengths differ from transformers'")
        if name == EXTRAS:
            # the comparison can fail: another activation, pooling or maximum misses
            wrong = score(d, rs[:1], "--activation", "identity")
            check(worst(wrong[0]["scores"], rs[0]["st_scores"]) > 100 * TOL,
                  "identity activation still matched CrossEncoder's Sigmoid scores")
            wrong = score(d, rs[:1], "--pooling", "cls")
            check(worst(wrong[0]["logits"], rs[0]["logits"]) > 100 * TOL,
                  "cls pooling still matched the pooler's logits")
            wrong = score(d, rs[:1], "--max-tokens", str(MAXT // 2))
            check(worst(wrong[0]["logits"], rs[0]["logits"]) > 100 * TOL,
                  f"truncating at {MAXT // 2} still matched the {MAXT}-token logits")
            # more pairs than one forward batch takes (256): the same scores as in small groups
            many = [f"document {i}: vitamin {i % 7} and disease {i % 11}" for i in range(300)]
            inp = json.dumps({"query": "vitamin and disease", "documents": many}) + "\n"
            inp3 = "".join(json.dumps({"query": "vitamin and disease", "documents": many[j:j + 100]})
                           + "\n" for j in range(0, 300, 100))
            rc, o1, err = run([RERANK, "--model", d, "--threads", "2"], input=inp)
            rc3, o3, err3 = run([RERANK, "--model", d, "--threads", "2"], input=inp3)
            assert rc == 0 and rc3 == 0, err + err3
            one = json.loads(o1)["logits"]
            groups = [x for l in o3.splitlines() for x in json.loads(l)["logits"]]
            check(len(one) == 300 and one == groups,
                  "300 pairs in one call differ from the same pairs in groups of 100")
            # bad input: one line naming FILE:LINE, after the records before it
            bad = os.path.join(tmp, "bad.jsonl")
            good = json.dumps({"query": "q", "documents": ["d"]})
            for body, want in ((good + "\n{\"query\": 1}\n", "bad.jsonl:2: \"query\" missing"),
                               (good + "\n" + good + "\nnot json\n", "bad.jsonl:3: malformed JSON"),
                               ("{\"query\": \"q\", \"documents\": [\"a\", 3]}\n",
                                "bad.jsonl:1: documents[1] is not a string")):
                with open(bad, "w") as f:
                    f.write(body)
                rc, o3, err = run([RERANK, "--model", d, bad])
                check(rc == 1 and want in err and err.count("\n") == 1 and
                      len(o3.splitlines()) == body.count(good),
                      f"bad input {body!r}: exit {rc}, stderr {err!r}")
            with open(bad, "wb") as f:
                f.write(b'{"query": "q", "documents": ["ok", "\xff"]}\n')
            rc, _, err = run([RERANK, "--model", d, bad])
            check(rc == 1 and "bad.jsonl:1:" in err, f"invalid UTF-8: exit {rc}, {err!r}")
            # a line past --max-line-bytes, and /dev/zero (one endless line): an error naming
            # the line after the records before it, never a buffer that grows with the input
            with open(bad, "w") as f:
                f.write(good + "\n" + json.dumps({"query": "q", "documents": ["x" * 5000]}) + "\n")
            rc, o3, err = run([RERANK, "--model", d, "--max-line-bytes", "4096", bad])
            check(rc == 1 and "bad.jsonl:2: line longer than 4096 bytes" in err and
                  len(o3.splitlines()) == 1, f"over-long line: exit {rc}, {err!r}")
            rc, o3, err = run([RERANK, "--model", d, "--max-line-bytes", "1000000", "/dev/zero"])
            check(rc == 1 and "/dev/zero:1: line longer than" in err, f"/dev/zero: exit {rc}, {err!r}")
            rc, _, err = run([RERANK, "--model", MODEL, "--info"])
            check(rc == 1 and "not a cross-encoder" in err,
                  f"a sentence-embedding model was not refused: {err!r}")
            # config.json settings the loader refuses, naming the file
            for key, val, want in (("id2label", [0], 'bad "id2label"'),
                                   ("sentence_transformers",
                                    {"activation_fn": "torch.nn.modules.activation.ReLU"},
                                    "unsupported activation_fn"),
                                   ("architectures", ["MPNetForSequenceClassification"],
                                    "not a cross-encoder")):
                bd = os.path.join(tmp, "bad-" + key)
                os.makedirs(bd)
                for f in os.listdir(d):
                    if f != "config.json":
                        os.symlink(os.path.join(d, f), os.path.join(bd, f))
                cfg = json.load(open(os.path.join(d, "config.json")))
                cfg[key] = val
                json.dump(cfg, open(os.path.join(bd, "config.json"), "w"))
                rc, _, err = run([RERANK, "--model", bd, "--info"])
                check(rc == 1 and want in err and "config.json" in err and err.count("\n") == 1,
                      f"config {key}={val}: exit {rc}, {err!r}")
            rc, info, err = run([RERANK, "--model", d, "--info"])
            check(rc == 0 and json.loads(info)["activation"] == "sigmoid" and
                  json.loads(info)["max_tokens"] == MAXT, f"--info: {info!r} {err!r}")

if failures:
    sys.exit(f"{len(failures)} checks failed")
