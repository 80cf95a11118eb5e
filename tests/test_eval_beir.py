"""test_eval_beir.py — scripts/eval-beir's scoring (`--score`), against nDCG@10 and
recall@100 worked out by hand from trec_eval's definitions on a tiny judged set: graded
gain over log2(rank + 1), the ideal ranking from the judgments, ties broken by descending
docno, a document whose id is the query's left out, queries without a positive judgment or
without results not counted. The issue bars quote these numbers to the thousandth, so the
scorer is checked apart from any model.

Run by tests/run.sh; needs nothing but python3."""
import math
import os
import subprocess
import sys
import tempfile

from refcheck import check, failures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = math.log2

QRELS = """query-id\tcorpus-id\tscore
q1\td1\t2
q1\td2\t1
q2\td4\t1
q2\td8\t1
q3\td5\t1
q4\td7\t1
q6\td9\t0
"""
# q1: d3 (not judged) first, then d1 (grade 2), d2 (grade 1)
# q2: d4 only, of two relevant: recall 0.5
# q3: d5 (relevant) and d6 tie; the higher docno, d6, ranks first
# q4: the query's own id first, left out: d7 is first
# q5: not judged, q6: no positive judgment: neither counts
RUN_A = """q1 Q0 d3 1 3.0 x
q1 Q0 d1 2 2.0 x
q1 Q0 d2 3 1.0 x
q2 Q0 d4 1 1.0 x
q3 Q0 d5 1 0.5 x
q3 Q0 d6 2 0.5 x
q4 Q0 q4 1 9.0 x
q4 Q0 d7 2 1.0 x
q5 Q0 d1 1 1.0 x
q6 Q0 d9 1 1.0 x
"""
RUN_B = """q1 Q0 d1 1 2.0 x
q1 Q0 d2 2 1.0 x
q2 Q0 d4 1 2.0 x
q2 Q0 d8 2 1.0 x
q3 Q0 d5 1 0.9 x
q4 Q0 d7 1 1.0 x
"""

nd_a = ((2 / L(3) + 1 / L(4)) / (2 + 1 / L(3))   # q1
        + 1 / (1 + 1 / L(3))                         # q2
        + (1 / L(3)) / 1                             # q3
        + 1) / 4                                     # q4
rc_a = (1 + 0.5 + 1 + 1) / 4

with tempfile.TemporaryDirectory() as d:
    os.makedirs(os.path.join(d, "qrels"))
    with open(os.path.join(d, "qrels", "test.tsv"), "w") as f:
        f.write(QRELS)
    runs = []
    for name, text in (("a.trec", RUN_A), ("b.trec", RUN_B)):
        runs.append(os.path.join(d, name))
        with open(runs[-1], "w") as f:
            f.write(text)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/eval-beir"), d, "--score"] + runs,
                       capture_output=True, text=True)
    check(p.returncode == 0, f"eval-beir --score exit {p.returncode}: {p.stderr}")
    lines = p.stdout.splitlines()
    check(len(lines) == 2, f"two lines expected: {p.stdout!r}")
    if len(lines) == 2:
        want_a = f"nDCG@10 {nd_a:.6f} (+0.000000)  recall@100 {rc_a:.6f}  (4 queries)"
        want_b = f"nDCG@10 1.000000 ({1 - nd_a:+.6f})  recall@100 1.000000  (4 queries)"
        check(lines[0].endswith(want_a), f"run a: {lines[0]!r}, want {want_a!r}")
        check(lines[1].endswith(want_b), f"run b: {lines[1]!r}, want {want_b!r}")

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
sys.exit(1 if failures else 0)
