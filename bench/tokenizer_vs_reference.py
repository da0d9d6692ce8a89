"""`pretrain tokenizer` and `pretrain tokenize` against the libraries called directly.

Run:  python bench/tokenizer_vs_reference.py [--vocab 8192] [--rounds 3] [--max-mb 0]

Corpus: the quickstart's cleaned documents (the data stage's output for the running Python
installation, about 9 MB) plus the shared web text, TinyStories and Tiny Shakespeare when
``../shared/data`` is there, written once as a data-stage folder of jsonl shards.

1. Training, same text, same vocabulary size, same GPT-4 split regex:
   - ours: ``tokenizer.stage.build`` over ``training_sample(read_docs(folder))``, reading and
     decoding the jsonl included (in a prefetch thread), as the tokenizer stage does;
   - rustbpe: ``train_from_iterator`` over the texts already in memory;
   - HF ``tokenizers``: BPE trainer with the same Split regex + ByteLevel pre-tokenizer.
2. Encoding to shards: ``shards.run`` (reading the jsonl, encoding, writing .bin/.idx,
   the split decision) at 1 and 2 threads, against raw ``tiktoken`` ``encode_ordinary_batch``
   of the in-memory texts with the same ranks and thread count.

Medians over ``--rounds`` interleaved rounds, MB of UTF-8 text per second of wall time, and
the ratio ours / direct call. The load average is printed; compare numbers of a quiet run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import announce, at_least

from pretrain.data import stage
from pretrain.data.config import DataConfig
from pretrain.data.docs import read_docs
from pretrain.tokenizer import shards
from pretrain.tokenizer import stage as tokenizer_stage
from pretrain.tokenizer.bpe import Tokenizer, training_sample
from pretrain.tokenizer.config import TokenizeConfig, TokenizerConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(folder: Path, max_mb: float) -> tuple[list[dict], list[str]]:
    """A data-stage folder of documents (written into ``folder``) and its domain names."""
    stage.process(DataConfig(), folder)  # the quickstart's default sources
    docs = list(read_docs(folder))
    extra = []
    c4 = SHARED / "webtext" / "c4_sample.jsonl"
    if c4.is_file():
        extra += [{"id": f"c4-{i}", "domain": "web", "text": json.loads(line)["text"], "meta": {}}
                  for i, line in enumerate(c4.open(encoding="utf-8"))]
    stories = SHARED / "tinystories" / "tinystories-valid-sample.txt"
    if stories.is_file():
        parts = stories.read_text(encoding="utf-8-sig").split("<|endoftext|>")
        extra += [{"id": f"ts-{i}", "domain": "stories", "text": t.strip(), "meta": {}}
                  for i, t in enumerate(parts) if t.strip()]
    if extra:
        with open(folder / "docs-99999.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in extra)
        docs += extra
    if max_mb:
        kept, size = [], 0
        for d in docs:
            size += len(d["text"].encode())
            if size > max_mb * 1e6:
                break
            kept.append(d)
        docs = kept
    return docs, sorted({d["domain"] for d in docs})


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=at_least(1), default=8192)
    ap.add_argument("--rounds", type=at_least(1), default=3)
    ap.add_argument("--max-mb", type=at_least(0, float), default=0, help="cap the corpus (0 = all of it)")
    args = ap.parse_args()
    announce()
    work = Path(tempfile.mkdtemp(prefix="tokbench-"))
    data = work / "data"
    data.mkdir()
    docs, domains = corpus(data, args.max_mb)
    if args.max_mb:  # the capped corpus as the only data-stage shard
        for p in data.glob("docs-*.jsonl"):
            p.unlink()
        with open(data / "docs-00000.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB, domains {domains}; "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}")

    # everything in the sample: no per-domain share or per-document cap binds
    cfg = TokenizerConfig(vocab_size=args.vocab, max_chars=10**12, doc_cap_chars=10**12,
                          special_tokens=["<|bos|>", "<|eos|>"])
    n_merges = args.vocab - len(cfg.special_tokens)
    import rustbpe
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    def ours_train() -> None:
        tokenizer_stage.build(cfg, lambda: training_sample(read_docs(data, prefetch=512), cfg, domains))

    def rustbpe_train() -> None:
        rustbpe.Tokenizer().train_from_iterator(iter(texts), n_merges, pattern=cfg.regex())

    def hf_train() -> None:
        hf = tokenizers.Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(cfg.regex()), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=n_merges, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer=trainer)

    train_times: dict[str, list[float]] = {"ours": [], "rustbpe": [], "hf": []}
    for _ in range(args.rounds):
        for name, fn in (("ours", ours_train), ("rustbpe", rustbpe_train), ("hf", hf_train)):
            train_times[name].append(timed(fn))
    print(f"\ntraining, vocab {args.vocab} (median of {args.rounds}):")
    ref = statistics.median(train_times["rustbpe"])
    for name, ts in train_times.items():
        t = statistics.median(ts)
        print(f"  {name:10} {t:7.2f} s  {mb / t:6.2f} MB/s   rustbpe/this {ref / t:5.2f}x")

    tok: Tokenizer = tokenizer_stage.build(cfg, lambda: training_sample(read_docs(data), cfg, domains))
    enc = tok._enc
    print("\nencoding to shards (median of rounds):")
    out = work / "tokens"

    def ours_tokenize(threads: int) -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        shards.run(TokenizeConfig(num_threads=threads), tok, read_docs(data, prefetch=512),
                   domains, out, {})

    for threads in (1, 2):
        times: dict[str, list[float]] = {"ours": [], "tiktoken": []}
        for _ in range(args.rounds):
            times["ours"].append(timed(lambda n=threads: ours_tokenize(n)))
            times["tiktoken"].append(timed(lambda n=threads: enc.encode_ordinary_batch(texts, num_threads=n)))
        ref = statistics.median(times["tiktoken"])
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"  {threads} thread(s) {name:9} {t:6.2f} s  {mb / t:6.2f} MB/s  "
                  f"{mb / t / threads:6.2f} MB/s per core   this/tiktoken {ref / t:5.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
