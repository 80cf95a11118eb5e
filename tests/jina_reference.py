#!/usr/bin/env python3
"""An independent PyTorch JinaBERT (jina-embeddings-v2-small-en / -base-en), written from the
published architecture (the JinaBERT paper, arXiv 2310.19923, and the model cards' config:
BERT with symmetric ALiBi instead of position embeddings, a GEGLU feed-forward, post-
LayerNorm), not from this project's C code; and the writer of the references that
tests/test_jina.c checks the CPU forward pass against:

    /tmp/b13-venv/bin/python tests/jina_reference.py      # needs torch and numpy

No JinaBERT weights can be had here, so the weights are generated: every value is a
function of (tensor seed, index) through splitmix64, which tests/test_jina.c computes the
same way in C, so only the small reference files are committed, never the weights (550 MB
for the base shape). Values are k/2^23 - 1 times a power of two, exact in float32.

For each case it writes tests/data/jina-NAME/: config.json (the published keys of
jinaai/jina-embeddings-v2-*-en with the case's sizes), case.json (seed, weight scales, the
token-id seed and the sequence lengths) and ref.f32 (one mean-pooled, L2-normalised float32
row per sequence, computed in float32 on the CPU, one sequence at a time: no padding).
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK64 = (1 << 64) - 1

# name, layers, hidden, heads, intermediate, lengths. small and base are the published
# shapes; tiny (6 heads: not a power of two) is cheap enough for every sanitizer pass.
CASES = [
    ("tiny", 2, 48, 6, 192, [1, 2, 3, 5, 17, 63, 64, 65, 255, 256, 257, 513, 1200]),
    ("small", 4, 512, 8, 2048, [1, 3, 64, 65, 300, 513, 1500, 4096, 8192]),
    ("base", 12, 768, 12, 3072, [1, 17, 129, 700, 2048, 4096]),
]
VOCAB = 30528


def pow2_scale(n):
    """The power of two nearest sqrt(3 / n): uniform weights of unit output variance."""
    return 2.0 ** round(math.log2(math.sqrt(3.0 / n)))


def tensor_specs(layers, H, I):
    """(name, shape, kind) in seed order; kind: ("u", scale), "gamma" or "beta"."""
    sh, si = pow2_scale(H), pow2_scale(I)
    out = [("embeddings.word_embeddings.weight", [VOCAB, H], ("u", 0.5)),
           ("embeddings.token_type_embeddings.weight", [2, H], ("u", 0.5)),
           ("embeddings.LayerNorm.weight", [H], "gamma"),
           ("embeddings.LayerNorm.bias", [H], "beta")]
    for l in range(layers):
        p = f"encoder.layer.{l}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            out.append((p + m + ".weight", [H, H], ("u", sh)))
            out.append((p + m + ".bias", [H], "beta"))
        out += [(p + "attention.output.LayerNorm.weight", [H], "gamma"),
                (p + "attention.output.LayerNorm.bias", [H], "beta"),
                (p + "mlp.gated_layers.weight", [2 * I, H], ("u", sh)),
                (p + "mlp.wo.weight", [H, I], ("u", si)),
                (p + "mlp.wo.bias", [H], "beta"),
                (p + "mlp.layernorm.weight", [H], "gamma"),
                (p + "mlp.layernorm.bias", [H], "beta")]
    return out


def splitmix(seed, n):
    """uint64 splitmix64 outputs for counters (seed << 32) + i, i < n < 2^32."""
    import numpy as np
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed, n):
    """[-1, 1) in steps of 2^-23: exact in float32."""
    import numpy as np
    return ((splitmix(seed, n) >> np.uint64(40)).astype(np.float64) * 2.0 ** -23 - 1.0).astype(np.float32)


def weights(model_seed, layers, H, I):
    import numpy as np
    out = {}
    for k, (name, shape, kind) in enumerate(tensor_specs(layers, H, I)):
        n = int(np.prod(shape))
        v = uniform(model_seed * 65536 + k, n)
        if kind == "gamma":
            v = np.float32(1) + v * np.float32(0.125)
        elif kind == "beta":
            v = v * np.float32(0.125)
        else:
            v = v * np.float32(kind[1])
        out[name] = v.reshape(shape)
    return out


def token_ids(model_seed, case_index, n):
    return (splitmix(model_seed * 65536 + 60000 + case_index, n) % VOCAB).astype("int64")


# --- the model, from the architecture's description


def alibi_slopes(n):
    """ALiBi (Press et al.): for n a power of two, the geometric sequence starting at
    2^(-8/n) with that ratio; otherwise the slopes of the closest smaller power of two, then
    every other slope of twice that power."""
    def pow2(m):
        first = 2.0 ** (-8.0 / m)
        return [first ** (i + 1) for i in range(m)]
    if n & (n - 1) == 0:
        return pow2(n)
    p = 1 << (n.bit_length() - 1)
    return pow2(p) + pow2(2 * p)[0::2][: n - p]


def build_model(torch, layers, H, NH, I, eps):
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
            self.ln1 = nn.LayerNorm(H, eps=eps)
            self.gated = nn.Linear(H, 2 * I, bias=False)
            self.wo = nn.Linear(I, H)
            self.ln2 = nn.LayerNorm(H, eps=eps)

        def forward(self, x, bias):
            n, d = x.shape[0], H // NH
            def heads(t):
                return t.view(n, NH, d).transpose(0, 1)  # [NH, n, d]
            q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
            scores = q @ k.transpose(1, 2) / math.sqrt(d) + bias
            ctx = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, H)
            x = self.ln1(self.o(ctx) + x)
            g = self.gated(x)
            h = nn.functional.gelu(g[:, :I]) * g[:, I:]  # exact (erf) GELU on the gated half
            return self.ln2(self.wo(h) + x)

    class JinaBert(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(VOCAB, H)
            self.types = nn.Embedding(2, H)
            self.ln = nn.LayerNorm(H, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))
            self.register_buffer("slopes", torch.tensor(alibi_slopes(NH), dtype=torch.float32))

        def forward(self, ids):
            n = ids.shape[0]
            x = self.ln(self.word(ids) + self.types(torch.zeros_like(ids)))
            pos = torch.arange(n, device=ids.device)
            dist = (pos[None, :] - pos[:, None]).abs().to(torch.float32)  # |key - query|
            # in float32, then in the model's dtype (scripts/bench-gpu runs it in fp16/bf16)
            bias = (-self.slopes[:, None, None] * dist[None]).to(x.dtype)
            for layer in self.layers:
                x = layer(x, bias)
            return nn.functional.normalize(x.mean(0), dim=0)

    return JinaBert()


def load(torch, model, w, layers):
    """The published tensor names onto the modules above."""
    t = lambda name: torch.from_numpy(w[name])
    with torch.no_grad():
        model.word.weight.copy_(t("embeddings.word_embeddings.weight"))
        model.types.weight.copy_(t("embeddings.token_type_embeddings.weight"))
        model.ln.weight.copy_(t("embeddings.LayerNorm.weight"))
        model.ln.bias.copy_(t("embeddings.LayerNorm.bias"))
        for l, m in enumerate(model.layers):
            p = f"encoder.layer.{l}."
            for mod, name in ((m.q, "attention.self.query"), (m.k, "attention.self.key"),
                              (m.v, "attention.self.value"), (m.o, "attention.output.dense"),
                              (m.ln1, "attention.output.LayerNorm"), (m.wo, "mlp.wo"),
                              (m.ln2, "mlp.layernorm")):
                mod.weight.copy_(t(p + name + ".weight"))
                mod.bias.copy_(t(p + name + ".bias"))
            m.gated.weight.copy_(t(p + "mlp.gated_layers.weight"))


def published_config(layers, H, NH, I):
    """jinaai/jina-embeddings-v2-base-en's config.json with the case's sizes."""
    return {
        "_name_or_path": "jinaai/jina-bert-implementation",
        "model_max_length": 8192,
        "architectures": ["JinaBertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
            "AutoModelForMaskedLM": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForMaskedLM",
            "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
            "AutoModelForSequenceClassification": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForSequenceClassification",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 8192,
        "model_type": "bert",
        "num_attention_heads": NH,
        "num_hidden_layers": layers,
        "pad_token_id": 0,
        "position_embedding_type": "alibi",
        "torch_dtype": "float32",
        "transformers_version": "4.26.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": VOCAB,
        "feed_forward_type": "geglu",
        "emb_pooler": "mean",
    }


def main():
    import numpy as np
    import torch
    torch.set_num_threads(2)
    only = sys.argv[1:]
    for ci, (name, layers, H, NH, I, lengths) in enumerate(CASES):
        if only and name not in only:
            continue
        seed = 1414 + ci
        d = os.path.join(ROOT, "tests/data/jina-" + name)
        os.makedirs(d, exist_ok=True)
        json.dump(published_config(layers, H, NH, I), open(os.path.join(d, "config.json"), "w"), indent=2)
        json.dump({"seed": seed, "scale_h": pow2_scale(H), "scale_i": pow2_scale(I),
                   "lengths": lengths}, open(os.path.join(d, "case.json"), "w"))
        model = build_model(torch, layers, H, NH, I, 1e-12).eval()
        load(torch, model, weights(seed, layers, H, I), layers)
        rows = []
        with torch.no_grad():
            for i, n in enumerate(lengths):
                rows.append(model(torch.from_numpy(token_ids(seed, i, n))).numpy())
        np.stack(rows).astype("<f4").tofile(os.path.join(d, "ref.f32"))
        print(f"{d}: {len(lengths)} sequences of {lengths[0]}..{lengths[-1]} tokens, "
              f"torch {torch.__version__}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
