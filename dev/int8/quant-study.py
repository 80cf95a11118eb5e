#!/usr/bin/env python3
"""quant-study.py — which of the four products of all-MiniLM-L6-v2 can be int8 on the GPU,
and at what activation-scale granularity, for a cosine >= 0.999 against fp32 on every text.

Simulates what shaders/gemm_i8.glsl computes (int8 x int8 products are exact in int32, so
fake quantisation in fp32 gives the same sums up to fp32 rounding): weights symmetric int8
with one scale per output channel (max|w| / 127), activations symmetric int8 with one scale
per token (GROUP 0) or per GROUP values of a token, rounded to nearest. Optional SmoothQuant
migration (a config's third field, WHICH:GROUP:ALPHA, or a spec's `s` with alpha QS_ALPHA,
default 0.5) into W's columns, x divided by the factors in the quantising pass, from the
calibration maxima of --calib checked texts or --calib-made-up made-up ones.

    /tmp/i15-venv/bin/python dev/int8/quant-study.py MODEL_DIR IDS.bin [--every N] [--calib-made-up N]
        [--configs all:0,ffn:0,...]

IDS.bin is tool_vk_bench's token-id file (scripts/bench-gpu --ids); every N-th text by
length is used (the 1,037-document check is every 5th of SciFact's 5,183).
Prints min / 0.1% / 1% / mean cosine per config against the unquantised fp32 model.

With QS_NDCG=BEIR_DIR (e.g. ../shared/data/scifact) each config instead embeds the whole
corpus of BEIR_DIR (title + " " + text, truncated to 256 tokens, as scripts/eval-beir indexes
it; IDS.bin is then unused) and prints nDCG@10 and recall@100 of the test queries, embedded
by the unquantised model, scored by scripts/eval-beir's own functions; QS_NDCG_REF=1 adds the
unquantised corpus's row.
"""
import argparse, os, sys
import torch
from transformers import AutoModel

from ids import made_up_texts, read_ids  # dev/int8/ids.py, beside this script

def fq_act(x, group):
    # x [..., K]; symmetric int8, one scale a token (group 0) or per `group` values
    shp = x.shape
    if group:
        x = x.reshape(*shp[:-1], shp[-1] // group, group)
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    return (torch.round(x / s).clamp(-127, 127) * s).reshape(shp)

def fq_act2(x, first):
    # two roundings (QS_DOUBLE): codes at one scale per `first` values of a token (what a
    # product's epilogue sees of a row), then recoded at the token's scale over all of them
    shp = x.shape
    g = x.reshape(*shp[:-1], shp[-1] // first, first)
    sg = g.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    x1 = (torch.round(g / sg).clamp(-127, 127) * sg).reshape(shp)
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(x1 / s).clamp(-127, 127) * s

def fq_w(w, group=0):
    # one scale an output channel (group 0), or per `group` values of its row (along K)
    if group:
        n, k = w.shape
        return fq_act(w, group)
    s = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(w / s).clamp(-127, 127) * s

class QLinear(torch.nn.Module):
    """SmoothQuant factors s (per input channel) divide x before its quantisation and
    multiply W's columns: exact before rounding, and free in quant_i8.comp's pass (BERT's
    post-LayerNorm output is also the residual, so they cannot fold into the LayerNorm)."""
    def __init__(self, lin, group, s=None, wgroup=0, keep=None, static=None, ikeep=False):
        super().__init__()
        self.ikeep = ikeep  # I, J: the outliers as integers in the row's units (J: two int8
        # digits), their weights quantised with the row (its scale over every column); S: the
        # outliers int8 with their own scale a token, their weights with their own a row
        self.s = s
        self.static = static  # per input channel static activation scales (mode c), or None
        if static is not None:  # they fold into W's columns: sum_k q_k (s_k w_nk)
            s = static
        self.keep = keep  # input channels left unquantised (outliers, LLM.int8()-style)
        w = lin.weight.data.clone()
        if keep is not None and ikeep in ("I", "J"):
            # W's row scale over every column; the outliers' weights in units 128 times
            # finer, two int8 digits (J), or int8 in the row's units (I)
            mx = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127.0
            wo = w[:, keep] / mx
            wq = w.clone()
            wq[:, keep] = 0
            self.w = torch.round(wq / mx).clamp(-127, 127) * mx
            if ikeep == "J":
                base = float(os.environ.get("QS_BASE", "128"))
                self.wfine = torch.round(wo * base).clamp(-127 * base, 127 * base)
                self.mx = mx
            self.wkeep = torch.round(wo) * mx
        elif keep is not None:
            self.wkeep = (w * s if s is not None else w)[:, keep].clone()
            if ikeep == "S":  # one scale a row over the outlier columns
                self.wkeep = fq_w(self.wkeep)
            w = w.clone()
            w[:, keep] = 0
        if keep is None or ikeep not in ("I", "J"):
            self.w = fq_w(w * s if s is not None else w, wgroup)
        self.b = lin.bias.data.clone()
        self.group = group
        self.double = 0  # QS_DOUBLE (run_spec): fq_act2's first group
    def forward(self, x):
        if self.static is not None:
            q = torch.round(x / self.static).clamp(-127, 127)
            if self.keep is not None:
                q[..., self.keep] = 0
                return (torch.nn.functional.linear(q, self.w, self.b) +
                        (x[..., self.keep] / self.static[self.keep]) @ self.wkeep.T)
            return torch.nn.functional.linear(q, self.w, self.b)
        if self.s is not None:
            x = x / self.s
        if self.keep is not None and self.ikeep in ("I", "J"):
            xo = x[..., self.keep]
            x = x.clone()
            x[..., self.keep] = 0
            base = float(os.environ.get("QS_BASE", "128"))  # J's digit base
            floor = 0.0 if os.environ.get("QS_NOFLOOR") else 1.0 / (127.0 * base)
            sc = torch.maximum(x.abs().amax(-1, keepdim=True) / 127.0,
                               xo.abs().amax(-1, keepdim=True) * floor).clamp_min(1e-12)
            q = torch.round(x / sc).clamp(-127, 127) * sc
            if self.ikeep == "J":  # B hi_o hi_w + hi_o lo_w + lo_o hi_w: lo_o lo_w / B dropped
                B = base
                qo = torch.round(xo / sc)
                if not os.environ.get("QS_NOFLOOR"):
                    qo = qo.clamp(-127 * B, 127 * B)
                oh = torch.floor((qo + B / 2) / B); ol = qo - B * oh
                wh = torch.floor((self.wfine + B / 2) / B); wl = self.wfine - B * wh
                units = B * (oh @ wh.T) + oh @ wl.T + ol @ wh.T
                return torch.nn.functional.linear(q, self.w, self.b) + units * sc * self.mx.T
            qo = torch.round(xo / sc) * sc
            return torch.nn.functional.linear(q, self.w, self.b) + qo @ self.wkeep.T
        if self.keep is not None:
            xo = x[..., self.keep]
            if self.ikeep == "S":  # one scale a token over the outlier channels
                xo = fq_act(xo, 0)
            x = x.clone()
            x[..., self.keep] = 0
            if self.double:
                return (torch.nn.functional.linear(fq_act2(x, self.double), self.w, self.b) +
                        xo @ self.wkeep.T)
            return (torch.nn.functional.linear(fq_act(x, self.group), self.w, self.b) +
                    xo @ self.wkeep.T)
        return torch.nn.functional.linear(fq_act(x, self.group), self.w, self.b)

def embed(model, docs, bs=64):
    out = []
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    res = [None] * len(docs)
    with torch.no_grad():
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            L = max(len(docs[j]) for j in idx)
            ids = torch.zeros(len(idx), L, dtype=torch.long)
            m = torch.zeros(len(idx), L, dtype=torch.long)
            for r, j in enumerate(idx):
                ids[r, :len(docs[j])] = torch.tensor(docs[j])
                m[r, :len(docs[j])] = 1
            h = model(input_ids=ids, attention_mask=m).last_hidden_state
            v = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
            v = torch.nn.functional.normalize(v, dim=-1)
            for r, j in enumerate(idx):
                res[j] = v[r]
    return torch.stack(res)

PRODUCTS = {"qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
            "out": ("attention.output.dense",), "up": ("intermediate.dense",),
            "down": ("output.dense",)}
SETS = {"all": ["qkv", "out", "up", "down"], "ffn": ["up", "down"], "nodown": ["qkv", "out", "up"], "noqkv": ["out", "up", "down"], "outdown": ["out", "down"], "outup": ["out", "up"],
        "qkv": ["qkv"], "out": ["out"], "up": ["up"], "down": ["down"], "qkvup": ["qkv", "up"],
        "attn": ["qkv", "out"]}

def getmod(root, path):
    for p in path.split("."):
        root = getattr(root, p)
    return root

def setmod(root, path, m):
    *head, last = path.split(".")
    for p in head:
        root = getattr(root, p)
    setattr(root, last, m)

def calib_max(model, docs, which):
    """max |x| per input channel of every product in `which`, over the calibration texts.
    Through embed's padded batches, so the pad positions' activations count too, where
    calibrate.py (the GPU's file) runs one text a call; the figures in docs/bench-gpu.md
    were made this way."""
    stats, hooks = {}, []
    for l, layer in enumerate(model.encoder.layer):
        for p in which:
            mod = getmod(layer, PRODUCTS[p][0])
            def hk(m, inp, out, key=(l, p)):
                a = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).amax(0)
                stats[key] = torch.maximum(stats.get(key, a), a)
            hooks.append(mod.register_forward_hook(hk))
    embed(model, docs)
    for h in hooks:
        h.remove()
    return stats

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--configs", default="all:0,all:32,all:128,nodown:0,ffn:0,qkvup:0,down:0,out:0,qkv:0,up:0")
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--calib-made-up", type=int, default=0,
                    help="take the calibration maxima from this many made-up texts of random "
                         "token ids (lengths 16-256) instead of the checked texts")
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = AutoModel.from_pretrained(a.model, attn_implementation="eager").float().eval()
    if os.environ.get("QS_NDCG"):
        docs, ref = ndcg_setup(a, base), None
        if os.environ.get("QS_NDCG_REF"):
            report("fp32", embed(base, docs), None, docs)
    else:
        docs = read_ids(a.ids)
        docs = sorted(docs, key=len)[::a.every]
        ref = embed(base, docs)
    print(f"{len(docs)} texts, {sum(map(len, docs))} tokens")
    for cfg in a.configs.split(","):
        if "=" in cfg:
            run_spec(a, cfg, docs, ref)
            continue
        parts = cfg.split(":")
        which, group = parts[0], int(parts[1])
        alpha = float(parts[2]) if len(parts) > 2 else None
        m = AutoModel.from_pretrained(a.model, attn_implementation="eager").float().eval()
        stats = calib_max(m, docs[::max(1, len(docs) // a.calib)], SETS[which]) if alpha is not None else {}
        for l, layer in enumerate(m.encoder.layer):
            for p in SETS[which]:
                s = None
                if alpha is not None:
                    wmax = torch.stack([getmod(layer, x).weight.abs().amax(0) for x in PRODUCTS[p]]).amax(0)
                    s = (stats[(l, p)].clamp_min(1e-5) ** alpha / wmax.clamp_min(1e-5) ** (1 - alpha))
                for path in PRODUCTS[p]:
                    setmod(layer, path, QLinear(getmod(layer, path), group, s))
        report(cfg, embed(m, docs), ref, docs)

def load_eval_beir():
    import importlib.machinery, importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "eval-beir")
    loader = importlib.machinery.SourceFileLoader("eval_beir", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("eval_beir", loader))
    loader.exec_module(mod)
    return mod

NDCG = {}  # QS_NDCG: the corpus's ids, the queries' vectors, their judgments

def ndcg_setup(a, base):
    import json
    from transformers import AutoTokenizer
    d = os.environ["QS_NDCG"]
    tok = AutoTokenizer.from_pretrained(a.model)
    ids, texts = [], []
    for line in open(os.path.join(d, "corpus.jsonl"), encoding="utf-8"):
        o = json.loads(line)
        ids.append(o["_id"])
        texts.append((o.get("title") or "") + " " + (o.get("text") or ""))
    ev = load_eval_beir()
    qrels = ev.read_qrels(os.path.join(d, "qrels", "test.tsv"))
    qs = [json.loads(l) for l in open(os.path.join(d, "queries.jsonl"), encoding="utf-8")]
    qs = [q for q in qs if q["_id"] in qrels]
    enc = lambda t: tok(t, truncation=True, max_length=256)["input_ids"]
    NDCG.update(ids=ids, ev=ev, qrels=qrels, qids=[q["_id"] for q in qs],
                qv=embed(base, [enc(q["text"]) for q in qs]))
    return [enc(t) for t in texts]

def report_ndcg(cfg, v):
    sc = NDCG["qv"] @ v.T
    top = sc.topk(100, dim=1)
    run = {q: [(float(s), NDCG["ids"][int(i)]) for s, i in zip(top.values[r], top.indices[r])]
           for r, q in enumerate(NDCG["qids"])}
    nd, rc, n = NDCG["ev"].evaluate(run, NDCG["qrels"], True)
    print(f"{cfg:16s} nDCG@10 {nd:.4f}  recall@100 {rc:.4f}  ({n} queries, {v.shape[0]} documents)",
          flush=True)

def report(cfg, v, ref, docs):
    if NDCG:
        return report_ndcg(cfg, v)
    cos = (v * ref).sum(-1)
    srt = cos.sort().values
    n = len(srt)
    worst = int(cos.argmin())
    print(f"{cfg:16s} min {srt[0]:.5f} p0.1 {srt[int(n * 0.001)]:.5f} p1 {srt[int(n * 0.01)]:.5f} "
          f"mean {cos.mean():.6f}  below 0.999: {int((cos < 0.999).sum())}/{n}  "
          f"worst text {len(docs[worst])} tokens", flush=True)

def weight_scores(m, l, p):
    """Outlier channels from the weights alone (oKW): an input channel's expected size.
    qkv, up: the LayerNorm before them gives channel c about beta_c + N(0, gamma_c^2), so
    |beta_c| + 3 |gamma_c|; down: the up product's pre-activation for channel c has mean
    w_c . beta + b_c and deviation |w_c * gamma| (LN1's), so |mean| + 3 dev (GELU keeps it)."""
    layer = m.encoder.layer[l]
    if p == "qkv":
        ln = m.embeddings.LayerNorm if l == 0 else m.encoder.layer[l - 1].output.LayerNorm
        return ln.bias.detach().abs() + 3 * ln.weight.detach().abs()
    if p == "up":
        ln = layer.attention.output.LayerNorm
        return ln.bias.detach().abs() + 3 * ln.weight.detach().abs()
    if p == "down":
        ln = layer.attention.output.LayerNorm
        w = layer.intermediate.dense.weight.detach(); b = layer.intermediate.dense.bias.detach()
        mean = w @ ln.bias.detach() + b
        dev = (w * ln.weight.detach()).norm(dim=1)
        return mean.abs() + 3 * dev
    raise SystemExit(f"no weight scores for {p}")

def calib_texts(a, model, docs):
    """the calibration texts: --calib of the checked ones, or --calib-made-up random ones"""
    if not a.calib_made_up:
        return docs[::max(1, len(docs) // a.calib)]
    return made_up_texts(a.calib_made_up, model.config.vocab_size)

def run_spec(a, cfg, docs, ref):
    """PRODUCT=GROUP[s][wG][oK][@LAYERS]+...: each product's activation group (0: per token), s for
    SmoothQuant (alpha 0.5), wG for weight scales per G values of a row, oK to leave the K input
    channels with the largest calibration maxima unquantised (outliers in fp, LLM.int8()-style;
    oKW: chosen from the weights alone, weight_scores; oKI: the outliers as integers in the row's
    units with their weights int8 in the row's scale; oKJ: the outliers and their weights as two
    int8 digits, gemm_i8.glsl's tried form (environment QS_BASE the digits' base, 128;
    QS_NOFLOOR=1 for I and J no floor under the row's scale); oKS: the outliers int8 with their
    own scale a token and their weights int8 with their own scale a row),
    cM for static activation scales per input channel (calibration max x M / 127, M default 1,
    clipped beyond; folded into W's columns before its per-row quantisation), s's alpha from the
    environment's QS_ALPHA (0.5),
    @LAYERS (digits) the layers it applies to (all if absent); e.g. qkv=0s+out=0+up=0s+down=128w128.
    Environment QS_DOUBLE_P=PRODUCT with QS_DOUBLE=G: that product's activations (with oK) rounded
    twice, at one scale per G values of a token and then at the token's (fq_act2: gemm_i8.glsl's
    GQ with requant_i8.comp)"""
    import re
    m = AutoModel.from_pretrained(a.model, attn_implementation="eager").float().eval()
    items = []
    for it in cfg.split("+"):
        g = re.fullmatch(r"(\w+?)=(\d+|c[\d.]*)(s?)(?:w(\d+))?(?:o(\d+)([WIJS]?))?(?:@(\d+))?", it)
        if not g:
            sys.exit(f"bad spec item {it}")
        p, grp, sm, wg, ok, ow, lay = g.groups()
        items.append((p, grp, bool(sm), int(wg or 0), int(ok or 0), ow, set(map(int, lay)) if lay else None))
    need = sorted({p for p, grp, sm, _, ok, ow, _ in items
                   if sm or (ok and ow != "W") or grp.startswith("c")})
    stats = calib_max(m, calib_texts(a, m, docs), need) if need else {}
    # the weight-derived outlier choices first, from the unquantised modules
    wkeep = {(l, p): weight_scores(m, l, p).topk(ok).indices
             for l in range(len(m.encoder.layer)) for p, _, _, _, ok, wsel, _ in items if ok and wsel == "W"}
    for l, layer in enumerate(m.encoder.layer):
        for p, grp, sm, wg, ok, wsel, lay in items:
            if lay is not None and l not in lay:
                continue
            s = None
            if sm:
                wmax = torch.stack([getmod(layer, x).weight.abs().amax(0) for x in PRODUCTS[p]]).amax(0)
                al = float(os.environ.get("QS_ALPHA", "0.5"))
                s = stats[(l, p)].clamp_min(1e-5) ** al / wmax.clamp_min(1e-5) ** (1 - al)
            keep = None
            if ok and wsel == "W":
                keep = wkeep[(l, p)]
            elif ok:
                mx = stats[(l, p)] / (s if s is not None else 1)
                keep = mx.topk(ok).indices
            static = None
            if grp.startswith("c"):  # static per channel: calibration max x margin / 127
                static = stats[(l, p)].clamp_min(1e-5) * float(grp[1:] or 1) / 127.0
            for path in PRODUCTS[p]:
                q = QLinear(getmod(layer, path), 0 if static is not None else int(grp), s, wg,
                            keep, static, wsel if wsel in ("I", "J", "S") else False)
                if os.environ.get("QS_DOUBLE_P") == p:
                    q.double = int(os.environ.get("QS_DOUBLE", "48"))
                setmod(layer, path, q)
    report(cfg, embed(m, docs), ref, docs)

main()
