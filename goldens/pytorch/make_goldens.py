"""Regenerates the files in goldens/pytorch (see README.md).

Run with Debian's python3-torch (PyTorch 1.13.1): /usr/bin/python3 make_goldens.py
Output is deterministic (fixed seed, fixed tensor values).
"""
import collections
import json
import os
import pickle
import shutil

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(1234)


def out(*p):
    path = os.path.join(HERE, *p)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


# --- A tiny Hugging Face Gemma 2 state dict (transformers' names) ---------
H, L, NH, NKV, HD, FFN, V = 16, 2, 2, 1, 8, 32, 32


def hf_state(dtype):
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = torch.randn(V, H)
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = torch.randn(NH * HD, H)
        sd[p + "self_attn.k_proj.weight"] = torch.randn(NKV * HD, H)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(NKV * HD, H)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(H, NH * HD)
        sd[p + "mlp.gate_proj.weight"] = torch.randn(FFN, H)
        sd[p + "mlp.up_proj.weight"] = torch.randn(FFN, H)
        sd[p + "mlp.down_proj.weight"] = torch.randn(H, FFN)
        for n in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]:
            sd[p + n + ".weight"] = torch.randn(H) * 0.1
    sd["model.norm.weight"] = torch.randn(H) * 0.1
    for k in sd:
        sd[k] = sd[k].to(dtype)
    # transformers' state_dict() carries a _metadata attribute (BUILD on an OrderedDict).
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 1})])
    return sd


hf_config = {
    "model_type": "gemma2", "vocab_size": V, "hidden_size": H, "intermediate_size": FFN,
    "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": HD,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 128, "query_pre_attn_scalar": HD,
    "sliding_window": 16, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
    "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh",
}

sd = hf_state(torch.bfloat16)
# An old transformers rotary buffer the reader must skip.
sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.arange(HD // 2, dtype=torch.float32)
torch.save(sd, out("hf_legacy", "pytorch_model.bin"), _use_new_zipfile_serialization=False)
json.dump(hf_config, open(out("hf_legacy", "config.json"), "w"), indent=1)
# The same weights as a plain safetensors-free reference: each tensor contiguous, canonical order.
ref = collections.OrderedDict((k, v.contiguous()) for k, v in sd.items() if "inv_freq" not in k)
torch.save(ref, out("hf_legacy", "reference.pt"))

# Sharded zip-format float16 export with an index.
sd16 = hf_state(torch.float16)
keys = list(sd16.keys())
half = len(keys) // 2
shards = [collections.OrderedDict((k, sd16[k]) for k in keys[:half]),
          collections.OrderedDict((k, sd16[k]) for k in keys[half:])]
wm = {}
for i, s in enumerate(shards):
    name = f"pytorch_model-0000{i+1}-of-00002.bin"
    torch.save(s, out("hf_sharded", name))
    for k in s:
        wm[k] = name
json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, open(out("hf_sharded", "pytorch_model.bin.index.json"), "w"), indent=1)
json.dump(hf_config, open(out("hf_sharded", "config.json"), "w"), indent=1)
torch.save(collections.OrderedDict((k, v.contiguous()) for k, v in sd16.items()), out("hf_sharded", "reference.pt"))

# --- gemma_pytorch int8 checkpoint (Gemma 1, fused qkv, weight_scaler) -----
G = {"layers": 2, "hidden": 16, "heads": 2, "kv": 1, "hd": 8, "ffn": 32, "vocab": 32}
msd = collections.OrderedDict()
exp = collections.OrderedDict()


def q8(name, rows, cols, canon):
    w = torch.randint(-127, 128, (rows, cols), dtype=torch.int8)
    s = (torch.rand(rows) * 0.02 + 0.001).to(torch.bfloat16)
    msd[name + ".weight"] = w
    msd[name + ".weight_scaler"] = s
    deq = w.float() * s.float().unsqueeze(-1)
    if isinstance(canon, list):
        r0 = 0
        for cname, n in canon:
            exp[cname] = deq[r0:r0 + n].contiguous()
            r0 += n
    else:
        exp[canon] = deq


q8("embedder", G["vocab"], G["hidden"], "token_embd.weight")
for i in range(G["layers"]):
    p = f"model.layers.{i}."
    b = f"blk.{i}."
    q, kv = G["heads"] * G["hd"], G["kv"] * G["hd"]
    q8(p + "self_attn.qkv_proj", q + 2 * kv, G["hidden"], [(b + "attn_q.weight", q), (b + "attn_k.weight", kv), (b + "attn_v.weight", kv)])
    q8(p + "self_attn.o_proj", G["hidden"], q, b + "attn_output.weight")
    q8(p + "mlp.gate_proj", G["ffn"], G["hidden"], b + "ffn_gate.weight")
    q8(p + "mlp.up_proj", G["ffn"], G["hidden"], b + "ffn_up.weight")
    q8(p + "mlp.down_proj", G["hidden"], G["ffn"], b + "ffn_down.weight")
    for n, c in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")]:
        w = (torch.randn(G["hidden"]) * 0.1).to(torch.bfloat16)
        msd[p + n + ".weight"] = w
        exp[b + c + ".weight"] = w
w = (torch.randn(G["hidden"]) * 0.1).to(torch.bfloat16)
msd["model.norm.weight"] = w
exp["output_norm.weight"] = w
msd["freqs_cis"] = torch.polar(torch.ones(4, 4), torch.randn(4, 4))  # complex64 buffer, ignored
torch.save({"model_state_dict": msd}, out("gemma1_int8.ckpt"))
torch.save(exp, out("gemma1_int8.expected.pt"))
json.dump({"model_type": "gemma", "vocab_size": G["vocab"], "hidden_size": G["hidden"],
           "intermediate_size": G["ffn"], "num_hidden_layers": G["layers"], "num_attention_heads": G["heads"],
           "num_key_value_heads": G["kv"], "head_dim": G["hd"]}, open(out("gemma1_int8.config.json"), "w"), indent=1)

# --- Views: offsets, strides, shared storages, several dtypes -------------
base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
views = collections.OrderedDict()
views["base"] = base
views["rows"] = base[2:5]                 # storage offset, contiguous
views["transposed"] = base.t()            # non-contiguous
views["cols"] = base[:, 3:7]              # row stride 10, inner stride 1
views["every_other"] = base[:, ::2]       # inner stride 2
views["elem"] = base[3, 4]                # 0-dim
views["expand"] = torch.arange(3, dtype=torch.int64).reshape(3, 1).expand(3, 4)  # stride 0
views["f64"] = torch.linspace(-1, 1, 7, dtype=torch.float64)
views["f16"] = torch.linspace(-1, 1, 9).to(torch.float16).reshape(3, 3).t()
views["bf16"] = torch.linspace(-2, 2, 12).to(torch.bfloat16).reshape(3, 4)[1:]
views["i8"] = torch.arange(-8, 8, dtype=torch.int8)
views["u8"] = torch.arange(16, dtype=torch.uint8)
views["bool"] = torch.tensor([True, False, True])
views["param"] = torch.nn.Parameter(torch.ones(2, 3))
views["empty"] = torch.zeros(0, 4)
contig = collections.OrderedDict((k, v.detach().contiguous().clone()) for k, v in views.items())
torch.save(views, out("views", "zip.pt"))
torch.save(views, out("views", "legacy.pt"), _use_new_zipfile_serialization=False)
torch.save(views, out("views", "proto4.pt"), pickle_protocol=4)
torch.save(views, out("views", "legacy_proto4.pt"), _use_new_zipfile_serialization=False, pickle_protocol=4)
torch.save(contig, out("views", "contiguous.pt"))

# --- Plain pickles of every protocol for the VM ---------------------------
def canon(v):
    """A rendering the Go test reproduces from the unpickled value."""
    if v is None:
        return "N"
    if v is True:
        return "T"
    if v is False:
        return "F"
    if isinstance(v, int):
        return "i%d" % v
    if isinstance(v, float):
        return "f" + repr(v)
    if isinstance(v, str):
        return "s" + v.encode("utf-8").hex()
    if isinstance(v, (bytes, bytearray)):
        return "b" + bytes(v).hex()
    if isinstance(v, tuple):
        return "(" + ",".join(canon(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, (set, frozenset)):
        return "<" + ",".join(canon(x) for x in v) + ">"
    if isinstance(v, dict):
        return "{" + ",".join(canon(k) + ":" + canon(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


shared = [7, 8]
for proto in range(6):
    obj = {
        "int": 1, "neg": -5, "i16": 40000, "i32": -2**31, "big": 2**70, "bigneg": -2**65,
        "float": 1.5, "negf": -0.1, "str": "h\u00e9llo\n\u20ac\U0001F600", "bytes": b"\x00\xff\n",
        "list": [1, 2, [3]], "tuple": (1, "a"), "empty_tuple": (), "t1": (1,), "t3": (1, 2, 3),
        "none": None, "t": True, "f": False, "nested": {"a": {"b": [None]}},
        "shared": [shared, shared], "od": collections.OrderedDict([("x", 1), ("y", 2)]),
        "keys": {1: "one", (1, 2): "pair", "s": "str"}, "long_list": list(range(1500)),
    }
    if proto >= 4:
        obj["set"] = {1, 2}
        obj["frozenset"] = frozenset({3})
    if proto >= 5:
        obj["bytearray"] = bytearray(b"ab")
    with open(out("pickles", f"proto{proto}.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=proto)
    with open(out("pickles", f"proto{proto}.canon"), "w") as f:
        f.write(canon(obj) + "\n")
