"""The eval stage: everything measured on a trained model, into ``results.json``.

Held-out loss, perplexity and bits per byte per domain (``loss.py``); the benchmark tasks
(``tasks.py``) and the contamination of the training data with them (``contamination.py``);
DCLM's CORE (``core.py``); the memorization probe (``memorization.py``); and, when
``eval.harness`` names tasks, lm-evaluation-harness (``harness.py``, ``harness.json``).
Gates (``gates.py``) judge ``results.json`` afterwards; they are not part of the stage.
"""

from __future__ import annotations

import json
from typing import Any

from ..data.docs import doc_files, read_output
from ..log import log0
from ..rundir import StageRun
from ..tokenizer.shards import Splitter, TokenShards
from . import baselines, contamination, core, harness, memorization, tasks
from .config import EvalConfig
from .files import scored
from .loss import domain_windows, held_out
from .scoring import seq_len_of
from .trained import autocast, load_trained


def run(run: StageRun, cfg: EvalConfig, device: str) -> None:
    model, tok = load_trained(run.inputs["train"], run.inputs["tokenizer"], device)
    with autocast(model.embed.weight.device):
        _evaluate(run, cfg, model, tok)


def _evaluate(run: StageRun, cfg: EvalConfig, model: Any, tok: Any) -> None:
    val = TokenShards(run.inputs["tokenize"], "val")
    res: dict[str, Any] = dict(held_out(model, val, cfg.max_tokens_per_domain, cfg.batch_size,
                                        model.embed.weight.device))
    if cfg.baselines:
        wins = domain_windows(val, seq_len_of(model), cfg.max_tokens_per_domain)
        res["baselines"] = baselines.run(TokenShards(run.inputs["tokenize"], "train").shards,
                                         wins, val.token_bytes(), cfg.baseline_train_tokens,
                                         val.doc_start())
        log0(f"eval: n-gram baselines counted on {res['baselines']['train_tokens']:,} training "
             "tokens, scored on the same held-out tokens\n" + baselines.table(res, res["baselines"]))
    if cfg.tasks:
        res["tasks"] = tasks.run_tasks(model, tok, cfg, run.out / "samples")
        log0("eval: benchmarks (log-likelihood of the choices)\n" + tasks.table(res["tasks"]))
    if cfg.contamination and (cfg.tasks or cfg.core):
        data = read_output(run.inputs["data"])   # matched as the data stage matched
        res["contamination"] = contamination.report_files(
            doc_files(run.inputs["data"]), scored(cfg), data.decontam_hits,
            Splitter.of(val.meta), data.decontam_match["ngram"],
            data.decontam_match["min_item_words"])
        if res["contamination"]:
            log0("eval: contamination of the training data\n"
                 + contamination.table(res["contamination"]))
    if cfg.core:
        res["core"] = core.run(model, tok, cfg)
        log0("eval: DCLM CORE\n" + core.table(res["core"]))
    if cfg.memorization_docs:
        res["memorization"] = memorization.probe(model, run.inputs["tokenize"], cfg)
        log0(memorization.table(res["memorization"]))
    (run.out / "results.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    run.counts.update(res)
    if cfg.harness:
        scores = harness.run(model, tok, cfg)
        (run.out / "harness.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        run.counts["harness"] = scores
        for name, metrics in scores.items():
            log0(f"eval: harness {name}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
