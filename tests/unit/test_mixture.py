"""The mixture-aware loader: domain weights, curriculum, epoch limits, rank sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain import stages
from pretrain.config import ConfigError
from pretrain.pipeline import run_stages
from pretrain.run_config import load_config
from pretrain.tokenizer import shards
from pretrain.tokenizer.bpe import Tokenizer
from pretrain.tokenizer.config import BOS, EOS, TokenizeConfig
from pretrain.train.config import MixtureEntry
from pretrain.train.data import MixtureWindows

from ..conftest import tiny_overrides


def _lettered_shards(out, docs: list[tuple[str, str, int]], seed: int,
                     cfg: TokenizeConfig) -> shards.TokenShards:
    """Byte-level train shards of ``docs`` (domain, its letters, characters), each document
    random letters of its domain's, so that every token tells its domain."""
    tok = Tokenizer([bytes([i]) for i in range(256)], r"[\s\S]", [BOS, EOS])
    rng = np.random.default_rng(seed)
    rows = [{"id": f"d{i}", "domain": d, "text": "".join(rng.choice(list(letters), n))}
            for i, (d, letters, n) in enumerate(docs)]
    shards.run(cfg, tok, iter(rows), sorted({d for d, _, _ in docs}), out, {})
    return shards.TokenShards(out, "train")


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    """Domain 'low' uses bytes a-z, domain 'high' bytes A-Z: every token tells its domain."""
    low, high = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    docs = [("low", low, 300) if i % 3 else ("high", high, 100)   # 40 'low', 20 shorter 'high'
            for i in range(60)]
    return _lettered_shards(tmp_path_factory.mktemp("mix"), docs, 0,
                            TokenizeConfig(val_fraction=0.05, shard_tokens=4000))


def _share_high(x: torch.Tensor) -> float:
    body = x[(x != 256) & (x != 257)]             # BOS/EOS carry no domain
    return float(((body >= ord("A")) & (body <= ord("Z"))).float().mean())


def _rows_pure(x: torch.Tensor) -> bool:
    for row in x:
        body = row[(row != 256) & (row != 257)]
        upper = (body >= ord("A")) & (body <= ord("Z"))
        if not (upper.all() or (~upper).all()):
            return False
    return True


def test_weights_set_the_share_and_rows_stay_within_a_domain(train_shards):
    mix = [MixtureEntry("high", weight=3.0), MixtureEntry("low", weight=1.0)]
    w = MixtureWindows(train_shards, 16, seed=0, mixture=mix, total_steps=100, rows_per_step=64)
    x = torch.cat([w.batch(s, 0, 64)[0] for s in range(20)])
    assert 0.70 < _share_high(x) < 0.80      # 3:1, although 'high' has a third of the tokens
    assert _rows_pure(x)


def test_each_domains_spans_are_its_documents_in_stored_order(train_shards):
    """The spans are made with array masks per shard (a loop over the documents took 14 s
    and 1.7 GB at 10M documents): the same rows as the walk over the index."""
    w = MixtureWindows(train_shards, 16, seed=0, mixture=[MixtureEntry("high"),
                                                          MixtureEntry("low")],
                       total_steps=10, rows_per_step=8)
    for name in ("high", "low"):
        dom = train_shards.domains.index(name)
        want = [(s, int(a), int(n)) for s, idx in enumerate(train_shards.index)
                for a, n, d in idx if d == dom]
        assert [tuple(r) for r in w.spans[name].tolist()] == want
        assert w.tokens[name] == sum(n for *_, n in want)
        assert len({s for s, *_ in want}) > 1   # the fixture's domains span shards
    assert w.epochs(0) == {"high": 0.0, "low": 0.0}


def test_curriculum_moves_the_weights_over_the_run(train_shards):
    mix = [MixtureEntry("high", weight=1.0, weight_end=0.0), MixtureEntry("low", weight=0.0, weight_end=1.0)]
    w = MixtureWindows(train_shards, 16, seed=0, mixture=mix, total_steps=100, rows_per_step=32)
    assert _share_high(w.batch(0, 0, 32)[0]) == 1.0
    assert _share_high(w.batch(99, 0, 32)[0]) < 0.1
    assert np.allclose(w.weights(50), [0.5, 0.5])


def test_epoch_limit_stops_a_domain_once_its_passes_are_used(train_shards, capsys):
    mix = [MixtureEntry("high", weight=1.0, max_epochs=1.0), MixtureEntry("low", weight=1.0)]
    rows, seq = 8, 16
    w = MixtureWindows(train_shards, seq, seed=0, mixture=mix, total_steps=1000, rows_per_step=rows)
    high_tokens = w.tokens["high"]
    limit_step = int(np.ceil(high_tokens / (0.5 * rows * seq)))   # half the rows until then
    assert w.weights(limit_step - 1)[0] == 0.5
    assert "max_epochs" not in capsys.readouterr().err
    assert w.weights(limit_step + 1)[0] == 0.0
    assert _share_high(w.batch(limit_step + 1, 0, rows)[0]) == 0.0
    # the step it stops at is logged, once: the step the cap was reached, not the first
    # one asked after it (a resumed run's first step; it said {limit_step + 1} here)
    err = capsys.readouterr().err
    assert err.count("domain 'high' is at its max_epochs = 1 from data position "
                     f"{limit_step} on") == 1
    # the uncapped domain, drawn many times over, is said at the start (it was not)
    w.say_repeats()
    low = w.epochs(1000)["low"]
    assert low > 2 and f"the mixture draws 'low' {low:.2f} epochs of its train tokens over " \
        "train.steps = 1000, with no max_epochs to cap it" in capsys.readouterr().err
    short = MixtureWindows(train_shards, seq, seed=0, mixture=mix, total_steps=2, rows_per_step=1)
    short.say_repeats()
    assert "epochs of its train tokens" not in capsys.readouterr().err   # under one: quiet


def test_ranks_split_the_global_batch_and_draws_are_deterministic(train_shards):
    mix = [MixtureEntry("high"), MixtureEntry("low")]
    w = MixtureWindows(train_shards, 16, seed=3, mixture=mix, total_steps=10, rows_per_step=8)
    whole = w.batch(4, 1, 8)[0]
    parts = [w.batch(4, 1, 4, rank=r, world=2)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(w.batch(4, 1, 8)[0], whole)


def test_unknown_domain_is_a_config_error(train_shards):
    with pytest.raises(ConfigError, match="no training tokens for domain"):
        MixtureWindows(train_shards, 16, 0, [MixtureEntry("web")], 10, 8)
    with pytest.raises(ConfigError, match="names a data domain"):
        MixtureEntry("")


def test_a_mixture_domain_no_source_has_is_refused_with_the_config(tmp_path):
    """Before the data, tokenizer and tokenize stages run (the shards' check comes after
    them)."""
    with pytest.raises(ConfigError, match=r"train.mixture: domain\(s\) \['prosee'\] are no "
                                          r"source's; the data sources' domains are \['code', "
                                          r"'prose'\]"):
        load_config(None, tiny_overrides(tmp_path, train__mixture='[{domain = "prosee"}]'))
    # a domain whose sources are all held out: refused now too, saying so (it was refused
    # after the tokenize stage, listing the very domain among the shards' domains)
    with pytest.raises(ConfigError, match=r"domain\(s\) \['prose'\] come only from sources "
                                          r"with use_for = \"val\""):
        load_config(None, tiny_overrides(tmp_path, data__sources__1__use_for='"val"',
                                         train__mixture='[{domain = "prose"}]'))
    load_config(None, tiny_overrides(tmp_path, data__sources__1__use_for='"train"',
                                     train__mixture='[{domain = "prose"}]'))


def test_mixture_in_the_training_stage(tmp_path):
    cfg = load_config(None, tiny_overrides(
        tmp_path, train__steps="10",
        train__mixture='[{domain = "prose", weight = 2.0, max_epochs = 4.0}, {domain = "code", weight = 1.0}]'))
    rd = run_stages(cfg, stages.names()[:4], force=set())
    counts = rd.manifest("train")["counts"]
    assert counts["val_loss_final"] < counts["val_loss_initial"]
    stored = load_config(str(rd.root / "config.toml"))      # the run dir records the mixture
    assert [(m.domain, m.weight, m.max_epochs) for m in stored.train.mixture] == [
        ("prose", 2.0, 4.0), ("code", 1.0, 0.0)]
    # the passes over each domain go into the manifest: 2:1 by weight, in tokens drawn
    tokens = load_stage_tokens(rd.root / "tokenize")
    drawn = {d: e * tokens[d] for d, e in counts["epochs"].items()}
    assert drawn["prose"] / drawn["code"] == pytest.approx(2.0, rel=1e-3)
    assert sum(drawn.values()) == pytest.approx(counts["tokens_seen"], rel=1e-3)
    # capped below what 10 steps draw: refused before the first step, not at the step
    short = load_config(None, tiny_overrides(
        tmp_path, train__steps="10", train__mixture='[{domain = "prose", max_epochs = 1e-3}, '
        '{domain = "code", max_epochs = 1e-3}]'))
    with pytest.raises(ConfigError, match=r"capped \(max_epochs\) or weighted 0 from step "
                                          r"\d+ on, before train.steps = 10"):
        run_stages(short, ("train",), force=set())
    # under a time budget the same mixture ends the run where it runs out, its model written
    end = MixtureWindows(shards.TokenShards(rd.root / "tokenize", "train"), cfg.model.seq_len,
                         0, short.train.mixture, 10, cfg.train.batch_size).exhausted_at()
    for sync in ("step", "lagged"):   # the host reads each step, or a step late
        budgeted = load_config(None, tiny_overrides(
            tmp_path, train__steps="1000", train__time_budget_s="600", train__host_sync=sync,
            train__mixture='[{domain = "prose", max_epochs = 1e-3}, '
            '{domain = "code", max_epochs = 1e-3}]'))
        done = run_stages(budgeted, ("train",), force={"train"}).manifest("train")["counts"]
        assert done["steps"] == end and (rd.root / "train" / "model.safetensors").exists()


def load_stage_tokens(tokenize_dir) -> dict[str, int]:
    from pretrain.train.data import _domain_tokens
    return _domain_tokens(shards.TokenShards(tokenize_dir, "train"))


def test_phases_switch_the_weights_at_their_fractions(train_shards):
    mix = [MixtureEntry("high", phase_weights=[1.0, 0.0, 3.0]),
           MixtureEntry("low", weight=1.0)]               # constant through the phases
    w = MixtureWindows(train_shards, 16, seed=0, mixture=mix, total_steps=100,
                       rows_per_step=64, phases=[0.0, 0.6, 0.9])
    assert np.allclose(w.weights(0), [0.5, 0.5]) and np.allclose(w.weights(59), [0.5, 0.5])
    assert np.allclose(w.weights(60), [0.0, 1.0]) and np.allclose(w.weights(89), [0.0, 1.0])
    assert np.allclose(w.weights(90), [0.75, 0.25]) and np.allclose(w.weights(99), [0.75, 0.25])
    assert _share_high(w.batch(70, 0, 64)[0]) == 0.0
    assert 0.65 < _share_high(torch.cat([w.batch(s, 0, 64)[0] for s in range(90, 100)])) < 0.85
    # expected passes: high drawn half of 60 steps and three quarters of 10
    e = w.epochs(100)
    assert e["high"] * w.tokens["high"] == pytest.approx((30 + 7.5) * 64 * 16)
    assert e["low"] * w.tokens["low"] == pytest.approx((30 + 30 + 2.5) * 64 * 16)


def test_a_domain_left_out_or_weighted_0_is_said_and_counted(train_shards, capsys):
    w = MixtureWindows(train_shards, 16, 0, [MixtureEntry("high")], 100, 8)
    assert "the mixture never draws from 'low' (no [[train.mixture]] entry)" in \
        capsys.readouterr().err
    assert w.epochs(100) == {"high": pytest.approx(100 * 8 * 16 / w.tokens["high"], abs=1e-5),
                             "low": 0.0}
    MixtureWindows(train_shards, 16, 0, [MixtureEntry("high"), MixtureEntry("low", weight=0.0)],
                   100, 8)
    assert "never draws from 'low' (weighted 0 throughout)" in capsys.readouterr().err
    MixtureWindows(train_shards, 16, 0, [MixtureEntry("high", weight=0.0, weight_end=1.0)], 100, 8)
    assert "never draws from 'low' (no [[train.mixture]] entry);" in capsys.readouterr().err
    MixtureWindows(train_shards, 16, 0, [MixtureEntry("high", weight=0.0)], 100, 8)
    assert ("never draws from 'low' (no [[train.mixture]] entry) or 'high' (weighted 0 "
            "throughout);") in capsys.readouterr().err
    MixtureWindows(train_shards, 16, 0, [MixtureEntry("high", weight_end=0.0),
                                         MixtureEntry("low", weight=0.0, weight_end=1.0)], 100, 8)
    assert "never draws" not in capsys.readouterr().err


def test_a_phase_after_the_last_step_is_said_and_its_domain_never_drawn(train_shards, capsys):
    """Steps run 0 .. train.steps - 1: a phase from 0.99 of 40 steps would start at step 40,
    which is never trained (the check looked at step 40 too, and said nothing)."""
    mix = [MixtureEntry("high", phase_weights=[1.0, 0.0]), MixtureEntry("low", phase_weights=[0.0, 1.0])]
    w = MixtureWindows(train_shards, 16, 0, mix, 40, 8, [0.0, 0.99])
    err = capsys.readouterr().err
    assert "mixture phase(s) 1 (from 0.99 of the run) get no step of train.steps = 40" in err
    assert "never draws from 'low' (weighted 0 throughout)" in err
    assert w.epochs(40)["low"] == 0.0
    # two starts within one step: the first of them is left with none
    MixtureWindows(train_shards, 16, 0, [MixtureEntry("high", phase_weights=[1.0, 2.0, 3.0])],
                   10, 8, [0.0, 0.52, 0.55])
    err = capsys.readouterr().err
    assert "phase(s) 1 (from 0.52 of the run) get no step of train.steps = 10" in err
    MixtureWindows(train_shards, 16, 0, mix, 40, 8, [0.0, 0.975])   # starts at step 39
    assert "get no step" not in capsys.readouterr().err


def test_a_mixture_that_runs_out_is_found_before_the_first_step(train_shards):
    mix = [MixtureEntry("high", max_epochs=0.5), MixtureEntry("low", max_epochs=0.25)]
    w = MixtureWindows(train_shards, 16, 0, mix, 1000, 8)
    end = w.exhausted_at()
    assert end is not None and 0 < end < 1000
    w.weights(end - 1)
    with pytest.raises(ConfigError, match=f"weighted 0 at step {end}"):
        w.weights(end)
    fits = MixtureWindows(train_shards, 16, 0, mix, end, 8)
    assert fits.exhausted_at() is None
    # skipped updates move the data position past train.steps: the run drew there and
    # crashed at its last step; it draws by the end's weights (the caps overdrawn a little)
    assert fits.weights(end + 2) == pytest.approx([0.5, 0.5])
    fits.batch(end + 2, 0, 4)
    phased = [MixtureEntry("high", phase_weights=[1.0, 0.0]),
              MixtureEntry("low", phase_weights=[1.0, 0.0])]
    assert MixtureWindows(train_shards, 16, 0, phased, 100, 8, [0.0, 0.5]).exhausted_at() == 50


def test_epochs_count_a_capped_domain_up_to_its_cap(train_shards):
    mix = [MixtureEntry("high", weight=1.0, max_epochs=1.0), MixtureEntry("low", weight=1.0)]
    rows, seq, steps = 8, 16, 1000
    w = MixtureWindows(train_shards, seq, seed=0, mixture=mix, total_steps=steps,
                       rows_per_step=rows)
    e = w.epochs(steps)
    assert e["high"] == pytest.approx(1.0, abs=rows * seq / w.tokens["high"])
    total = e["high"] * w.tokens["high"] + e["low"] * w.tokens["low"]
    assert total == pytest.approx(steps * rows * seq)


@pytest.mark.parametrize("bad, match", [
    ({"mixture_phases": [0.0, 0.5], "mixture": [{"domain": "a", "phase_weights": [1.0]}]},
     "1 phase_weights for 2"),
    ({"mixture_phases": [0.1, 0.5], "mixture": [{"domain": "a", "phase_weights": [1, 2]}]},
     "the first 0.0"),
    ({"mixture_phases": [0.0, 0.5, 0.5], "mixture": [{"domain": "a",
                                                      "phase_weights": [1, 2, 3]}]},
     "increasing"),
    ({"mixture_phases": [0.0, 0.5], "mixture": [{"domain": "a"}]}, "no \\[\\[train.mixture"),
    ({"mixture_phases": [0.0, 0.5], "mixture": [{"domain": "a", "phase_weights": [1, 2],
                                                 "weight_end": 0.0}]}, "not both"),
    ({"mixture_phases": [0.0, 0.5], "mixture": [{"domain": "a", "phase_weights": [-1, 1]}]},
     r"^mixture.0.phase_weights must be >= 0 \(domain 'a'\)$"),
    ({"mixture": [{"domain": "a"}, {"domain": "b"}, {"domain": "a", "weight": 2.0}]},
     r"names domain\(s\) \['a'\] more than once"),
    ({"time_budget_s": 60, "mixture": [{"domain": "a", "weight_end": 0.0}, {"domain": "b"}]},
     "with train.time_budget_s is only a cap"),
    ({"time_budget_s": 60, "mixture_phases": [0.0, 0.5],
      "mixture": [{"domain": "a", "phase_weights": [1, 0]}]}, "only a cap"),
])
def test_phase_configs_are_checked(bad, match):
    from pretrain.config import build
    from pretrain.train.config import TrainConfig
    with pytest.raises(ConfigError, match=match):
        build(TrainConfig, bad)


def test_the_shipped_five_domain_mixture_has_the_seed_proportions():
    cfg = load_config("mixture-5domain")
    first = {m.domain: m.phase_weights[0] for m in cfg.train.mixture}
    assert first == {"web": 60, "books": 15, "wiki": 5, "code": 15, "papers": 5}
    assert cfg.train.mixture_phases == [0.0, 0.6, 0.9]
    assert {s.label() for s in cfg.data.sources} == set(first)
    assert all(s.license for s in cfg.data.sources)


def test_a_phased_mixture_is_not_continued_under_other_steps():
    from pretrain.train.config import TrainConfig
    from pretrain.train.stage import _schedules_differ
    mix = [MixtureEntry("a", phase_weights=[1.0, 0.0]), MixtureEntry("b")]
    old = TrainConfig(steps=100, schedule="wsd", mixture=mix, mixture_phases=[0.0, 0.5])
    new = TrainConfig(steps=200, schedule="wsd", mixture=mix, mixture_phases=[0.0, 0.5])
    # the phases are fractions of train.steps: at 200 steps step 60 is still phase one
    assert "phase_weights" in (_schedules_differ(old, new, 60) or "")


def test_a_schedule_that_differs_is_said_from_the_step_the_log_shows_it():
    """The log's step s took lr_at(s - 1): 'differs from step 3' was the log's step 4."""
    from pretrain.train.config import TrainConfig
    from pretrain.train.optim import lr_at
    from pretrain.train.stage import _schedules_differ
    old = TrainConfig(steps=6, schedule="cosine", warmup_steps=2, time_budget_s=0)
    new = TrainConfig(steps=12, schedule="cosine", warmup_steps=2, time_budget_s=0)
    said = _schedules_differ(old, new, 6) or ""
    s = int(said.split("differs from step ")[1].split()[0])
    assert lr_at(s - 1, old) != lr_at(s - 1, new)   # what the log shows at step s
    assert all(lr_at(t, old) == lr_at(t, new) for t in range(s - 1))


@pytest.fixture(scope="module")
def three_domains(tmp_path_factory):
    """Domains 'a' (small), 'b' (10x) and 'c' (100x), each of its own letters."""
    docs = [(name, letters, 200) for name, letters, n in
            (("a", "abcdefgh", 2), ("b", "ijklmnop", 20), ("c", "qrstuvwx", 200)) for _ in range(n)]
    return _lettered_shards(tmp_path_factory.mktemp("mix3"), docs, 1,
                            TokenizeConfig(val_fraction=0.01, min_val_docs=0, shard_tokens=20_000))

def test_a_cap_holds_when_another_domain_was_capped_first(three_domains):
    """Once 'a' is capped its share goes to 'b', which then reaches its cap sooner: counted
    at its uncapped share, 'b' was drawn 1.45 passes for max_epochs = 1."""
    mix = [MixtureEntry("a", max_epochs=1.0), MixtureEntry("b", max_epochs=1.0),
           MixtureEntry("c")]
    rows, seq, steps = 10, 10, 1000
    w = MixtureWindows(three_domains, seq, 0, mix, steps, rows)
    step_share = rows * seq / np.array([w.tokens[d] for d in "abc"])   # one step's passes
    weights = np.array([w.weights(s) for s in range(steps)])
    passes = weights.sum(axis=0) * rows * seq / np.array([w.tokens[d] for d in "abc"])
    assert np.all(np.abs(passes[:2] - 1.0) <= step_share[:2])   # within a step's draws
    assert np.argmax(weights[:, 0] == 0) < np.argmax(weights[:, 1] == 0)   # a first
    e = w.epochs(steps)
    assert [e[d] for d in "abc"] == pytest.approx(passes, abs=1e-6)
    # what the batches hold: 'b' rows counted by their letters
    drawn_b = 0
    for s in range(steps):
        x, _ = w.batch(s, 0, rows)
        body = x[(x != 256) & (x != 257)]
        drawn_b += int(((body >= ord("i")) & (body <= ord("p"))).sum())
    assert drawn_b / w.tokens["b"] == pytest.approx(1.0, abs=0.1)
