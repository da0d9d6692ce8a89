"""The memorization probe on a model that did memorise: trained to overfit a few
documents, it reproduces them, not the held-out ones; duplicated documents are found."""

import random

import torch

from pretrain.eval import memorization
from pretrain.eval.config import EvalConfig
from pretrain.model.transformer import ModelConfig, Transformer
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig


def test_probe_tells_memorised_training_text_from_held_out(tmp_path):
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    rng = random.Random(0)

    def text() -> str:
        return "".join(rng.choice("abcdefghij ") for _ in range(60))

    train = [text() for _ in range(3)]
    docs = [{"id": f"t{i}", "text": t, "domain": "d", "split": "train"}
            for i, t in enumerate(train + [train[0]])]          # t0 twice: duplicated
    docs += [{"id": f"v{i}", "text": text(), "domain": "d", "split": "val"} for i in range(3)]
    shards.run(TokenizeConfig(), tok, iter(docs), ["d"], tmp_path, {})
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=258, d_model=64, n_layers=2, n_heads=4,
                                    seq_len=64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.tensor([[tok.bos_id, *tok.encode(t)][:49] for t in train])
    for _ in range(300):  # overfit the three training texts
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rep = memorization.probe(model, tmp_path, EvalConfig(memorization_docs=10,
                                                       memorization_prompt_tokens=16,
                                                       memorization_tokens=16))
    assert rep["train"] == {"docs": 4, "exact_rate": 1.0, "mean_prefix_tokens": 16.0}
    assert rep["val"]["docs"] == 3 and rep["val"]["exact_rate"] == 0.0
    assert rep["train_duplicated"]["docs"] == 1  # the one text that is there twice
    assert "train_duplicated" in memorization.table(rep)
