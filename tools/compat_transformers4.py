"""Cross-version check: our HF exports under transformers 4.x (the suite runs 5.x).

Not part of `make test` (it needs a second environment). Run:

    python3 -m venv /tmp/venv4 && /tmp/venv4/bin/pip install torch==2.13.0
    /tmp/venv4/bin/pip install "transformers==4.57.*" safetensors numpy tiktoken rustbpe rich tomli-w pyarrow regex
    /tmp/venv4/bin/pip install --no-deps -e .
    /tmp/venv4/bin/python tools/compat_transformers4.py

Prints, per architecture, the max logit difference against our model and whether greedy
generation matches, and whether AutoTokenizer gives our ids.
"""
import json
import tempfile
import textwrap
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from pretrain.model import hf
from pretrain.model.config import ModelConfig
from pretrain.model.generate import generate
from pretrain.model.transformer import Transformer
from pretrain.tokenizer import bpe
from pretrain.tokenizer import hf as tok_hf
from pretrain.tokenizer.config import TokenizerConfig

print("transformers", transformers.__version__)
for kw in [dict(arch="llama"), dict(arch="gpt2"), dict(arch="mla"), dict(arch="mla", q_lora_rank=20)]:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=48, vocab_size=97,
                      kv_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, init_std=0.1, rope_theta=500000.0), **kw})
    m = Transformer(cfg).eval()
    d = Path(tempfile.mkdtemp())
    hf.export(m, d)
    h = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    x = torch.randint(0, 97, (2, 48))
    with torch.no_grad():
        diff = (m(x)[0] - h(x).logits).abs().max().item()
    g = h.generate(torch.tensor([[5, 17, 3]]), max_new_tokens=20, do_sample=False, pad_token_id=0)[0, 3:].tolist()
    print(kw, type(h).__name__, "max|dlogit|", diff, "greedy equal", g == generate(m, [[5, 17, 3]], 20, temperature=0.0)[0])
tok = bpe.train(iter([Path(textwrap.__file__).read_text(encoding="utf-8")]), TokenizerConfig(vocab_size=500))
d = Path(tempfile.mkdtemp())
tok_hf.save_pretrained(tok, d, 64)
auto = AutoTokenizer.from_pretrained(d)
text = Path(json.__file__).read_text(encoding="utf-8")
print(type(auto).__name__, "ids equal", auto(text)["input_ids"] == [tok.bos_id, *tok.encode(text)])
