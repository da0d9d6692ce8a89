import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrain.config import ConfigError, PretrainError
from pretrain.model import io
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.pipeline import run_stages
from pretrain.plan.memory import Split, estimate
from pretrain.run_config import load_config
from pretrain.train import state
from pretrain.train.config import TrainConfig
from pretrain.train.data import RandomWindows
from pretrain.train.fits import MARGIN, check_memory
from pretrain.train.optim import lr_at, param_groups
from pretrain.train.parallelize import Layout, apply_activation_checkpointing, resolve_precision
from pretrain.train.stage import warmup_note

from ..conftest import tiny_overrides
from .training_runs import kill_at, make_tokens
from .training_runs import run as small_run


def test_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:9], lrs[1:10], strict=True))       # rising
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))         # then falling
    assert lr_at(55, cfg) == pytest.approx(0.55)                   # cosine midpoint
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_warmup_longer_than_the_run_is_allowed():
    cfg = TrainConfig(steps=5, warmup_steps=50, lr=1.0)
    assert [lr_at(s, cfg) for s in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])


class _Shards:
    def __init__(self, arrays):
        self.shards = arrays


def test_windows_are_deterministic_from_seed_and_step():
    arrays = [np.arange(1000, dtype=np.uint16), np.arange(5000, 5300, dtype=np.uint16)]
    w1, w2 = RandomWindows(_Shards(arrays), 16, seed=7), RandomWindows(_Shards(arrays), 16, seed=7)
    x1, y1 = w1.batch(3, 0, 8)
    x2, y2 = w2.batch(3, 0, 8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])                      # targets shifted by one
    assert not torch.equal(w1.batch(4, 0, 8)[0], x1)
    assert not torch.equal(RandomWindows(_Shards(arrays), 16, seed=8).batch(3, 0, 8)[0], x1)
    # contiguous windows from one shard
    assert all(((r[1:] - r[:-1]) == 1).all() for r in x1)


def test_every_token_of_a_shard_can_be_a_target():
    arr = np.arange(10, dtype=np.uint16)
    w = RandomWindows(_Shards([arr]), 4, seed=0)
    targets = set()
    for step in range(200):
        targets |= set(w.batch(step, 0, 4)[1].flatten().tolist())
    assert targets == set(range(1, 10))
    # a shard of exactly seq_len + 1 tokens is one window
    x, y = RandomWindows(_Shards([arr[:5]]), 4, seed=0).batch(0, 0, 2)
    assert x.tolist() == [[0, 1, 2, 3]] * 2 and y.tolist() == [[1, 2, 3, 4]] * 2


def test_no_decay_on_norms_and_embeddings():
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=8,
                                    vocab_size=50))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "embed.weight", "layers.0.attn_norm.weight", "layers.0.ffn_norm.weight", "norm.weight"}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    # GPT-2's position table is an embedding table too (it was decayed under AdamW)
    gpt2 = Transformer(ModelConfig(arch="gpt2", d_model=32, n_layers=1, n_heads=2, seq_len=8,
                                   vocab_size=50))
    names = {id(p): n for n, p in gpt2.named_parameters()}
    decay, no_decay = param_groups(gpt2, 0.1)
    assert {"embed.weight", "pos_embed.weight"} <= {names[id(p)] for p in no_decay["params"]}
    assert all(p.dim() == 2 for p in decay["params"])


@pytest.mark.parametrize("tie", [False, True])
def test_checkpoint_roundtrip(tmp_path: Path, tie: bool):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=8, vocab_size=50,
                      tie_embeddings=tie)
    model = Transformer(cfg).eval()
    io.save(tmp_path, cfg, model.state_dict(), io.tied_aliases(model))
    again = io.load(tmp_path)
    x = torch.randint(0, 50, (2, 8))
    assert torch.equal(model(x)[0], again(x)[0])
    assert again.cfg == cfg
    if tie:
        assert again.head.weight.data_ptr() == again.embed.weight.data_ptr()


def test_weights_of_another_layout_are_a_clear_error(tmp_path: Path):
    """Weights saved with the names of an older layout (separate q/k/v) name the file and
    say what to do, instead of a missing-keys traceback."""
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=8, vocab_size=50)
    model = Transformer(cfg)
    io.save(tmp_path, cfg, model.state_dict(), io.tied_aliases(model))
    weights = tmp_path / io.WEIGHTS
    sd = load_file(weights)
    q, k, v = sd.pop("layers.0.attn.wqkv.weight").split([32, 16, 16])
    sd |= {"layers.0.attn.wq.weight": q, "layers.0.attn.wk.weight": k,
           "layers.0.attn.wv.weight": v}
    save_file(sd, weights, metadata=io.LAYOUT)
    with pytest.raises(ConfigError, match=r"model.safetensors: the weights do not fit .*--force train"):
        io.load(tmp_path)


def test_weights_in_the_old_row_layout_are_refused(tmp_path: Path):
    """Same names and shapes, other row order: without the layout mark they are refused,
    not loaded into a wrong model."""
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=8, vocab_size=50)
    model = Transformer(cfg)
    io.save(tmp_path, cfg, model.state_dict(), {})
    save_file(load_file(tmp_path / io.WEIGHTS), tmp_path / io.WEIGHTS)  # no metadata
    with pytest.raises(ConfigError, match="older version of pretrain with another row layout"):
        io.load(tmp_path)


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("damage, said", [
    (lambda f: _truncate(f / io.WEIGHTS, 2000), r"model.safetensors: not a readable "
                                                r"safetensors file \(SafetensorError: "),
    (lambda f: _truncate(f / io.WEIGHTS, (f / io.WEIGHTS).stat().st_size - 100),
     r"model.safetensors: not a readable safetensors file .*truncated or damaged"),
    (lambda f: (f / io.CONFIG).write_text("[1]"), r"model_config.json: the model config is "
                                                  r"a JSON list, not an object"),
    (lambda f: (f / io.CONFIG).write_text('{"d_model": "x"}'),
     r"model_config.json: d_model: expected int, got 'x'"),
    (lambda f: (f / io.CONFIG).write_bytes(b'{"d_model": "\xff"}'),
     r"model_config.json: cannot read the model config: .*utf-8"),
], ids=["header cut", "body cut", "a list", "a wrong type", "not utf-8"])
def test_a_damaged_model_folder_is_one_line_naming_the_file(tmp_path: Path, damage, said):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=8, vocab_size=50)
    io.save(tmp_path, cfg, Transformer(cfg).state_dict(), {})
    damage(tmp_path)
    with pytest.raises(ConfigError, match=said):
        io.load(tmp_path)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_every_schedule_warms_up_and_ends_at_the_floor(schedule):
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1, schedule=schedule,
                      decay_frac=0.3)
    lrs = [lr_at(s, cfg) for s in range(101)]
    assert lrs[9] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:-1], lrs[10:], strict=True))
    if schedule == "wsd":
        assert lrs[10:70] == [1.0] * 60                 # stable until the last 30%
        assert lr_at(85, cfg) == pytest.approx(0.55)    # halfway down the linear decay
    if schedule == "linear":
        assert lr_at(55, cfg) == pytest.approx(0.55)


@pytest.mark.parametrize("steps,decay_frac,decay_steps",
                         [(10, 0.8, 8), (1000, 0.8, 800), (10, 0.7, 7), (24, 0.2, 5)])
def test_wsd_decays_over_its_share_of_the_steps(steps, decay_frac, decay_steps):
    """The stable phase ends at steps * (1 - decay_frac), floored after rounding away the
    float error (10 * (1 - 0.8) had floored to 1: 9 decay steps for 8)."""
    cfg = TrainConfig(steps=steps, warmup_steps=0, lr=1.0, schedule="wsd",
                      decay_frac=decay_frac)
    # the decay's first step is still at the peak (progress 0)
    assert sum(lr_at(s, cfg) < 1.0 for s in range(steps)) == decay_steps - 1


def test_a_warmup_as_long_as_the_run_is_said():
    """The default 50 warmup steps with --train.steps=20 train at 0.4x the peak and never
    decay: the start says so, and says nothing for a warmup shorter than the run."""
    note = warmup_note(TrainConfig(steps=20, warmup_steps=50, lr=3e-3))
    assert note is not None and "rises to 0.0012 (train.lr 0.003) and never decays" in note
    assert warmup_note(TrainConfig(steps=20, warmup_steps=19)) is None


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, seq_len=16, vocab_size=50)
    torch.manual_seed(0)
    a = Transformer(cfg)
    b = Transformer(cfg)
    b.load_state_dict(a.state_dict())
    apply_activation_checkpointing(b)
    x = torch.randint(0, 50, (2, 16))
    for m in (a, b):
        m(x[:, :-1], x[:, 1:])[1].backward()
    assert set(a.state_dict()) == set(b.state_dict())   # names unchanged
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=n)


def test_prefetched_batches_are_the_loaders_in_any_order_of_requests():
    from pretrain.train.data import Prefetcher
    made: list[tuple[int, int]] = []

    def batch(key):
        return torch.full((2, 3), key[0] * 10 + key[1]), torch.full((2, 3), -key[0])

    def make(key):
        made.append(key)
        return batch(key)
    pf = Prefetcher(make, torch.device("cpu"), background=True)
    try:
        # two micro-steps a step, as the loop asks: each request names the one after it;
        # after position 2 a rollback goes back to position 1
        for pos, micro in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (1, 0), (1, 1)]:
            ahead = (pos, 1) if micro == 0 else (pos + 1, 0)
            x, y = pf.get((pos, micro), ahead)
            assert torch.equal(x, batch((pos, micro))[0]) and torch.equal(y, batch((pos, micro))[1])
    finally:
        pf.close()
    # made ahead once each, but (1, 0) twice: the rollback asked for it instead of (3, 0)
    assert made.count((1, 0)) == 2 and made.count((3, 0)) == 1 and made.count((2, 1)) == 1


@pytest.mark.parametrize("seq_len", [2, 3])
def test_the_shortest_contexts_train_with_probes_only_where_they_fit(tmp_path: Path, seq_len):
    """A probe prompt is BOS and seq_len // 2 tokens: at seq_len 2 that left no position to
    generate into and crashed the first step; such a run now trains without probes."""
    from pretrain.train.loop import RunPaths, train

    from ..conftest import code_and_prose_shards
    (tmp_path / "tok").mkdir()
    (tmp_path / "out").mkdir()
    tokens = code_and_prose_shards(tmp_path / "tok", docs=6)
    cfg = ModelConfig(vocab_size=258, d_model=16, n_layers=1, n_heads=2, seq_len=seq_len)
    counts = train(TrainConfig(steps=4, batch_size=2, eval_every=4, eval_batches=1,
                               checkpoint_every=0), cfg, tokens, RunPaths(tmp_path / "out"),
                   device="cpu")
    gens = (tmp_path / "out" / "generations.jsonl").read_text().splitlines()
    assert counts["steps"] == 4 and (gens == []) == (seq_len < 3)


def test_resume_false_starts_over_without_the_earlier_checkpoints(tmp_path: Path, monkeypatch,
                                                                  capsys):
    """train.resume = false kept the earlier attempt's checkpoints in the folder: with higher
    steps than the new run's, the rotation removed each new one as it was written (a
    preempted rerun then had nothing of its own to resume), and a rollback could restore
    the other run's."""
    cfg = load_config(None, tiny_overrides(tmp_path, train__steps="12", train__time_budget_s="0",
                                           train__checkpoint_every="4", train__keep_last="1"))
    revive = kill_at(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        run_stages(cfg, ("data", "tokenizer", "tokenize", "train"), force=set())
    revive()
    folder = next((tmp_path / "runs" / "tiny" / "checkpoints").glob("train-*"))
    assert [p.name for p in folder.glob("step-*")] == ["step-0000008"]
    again = load_config(None, [*tiny_overrides(tmp_path, train__steps="12", train__time_budget_s="0",
                                               train__checkpoint_every="4", train__keep_last="1"),
                               ("train.resume", "false")])
    revive = kill_at(monkeypatch, 5)   # the new run stopped after its step-4 checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_stages(again, ("train",), force=set())
    revive()
    assert [p.name for p in folder.glob("step-*")] == ["step-0000004"]
    assert "train.resume = false: removing the earlier checkpoints" in capsys.readouterr().err


def test_a_checkpoint_of_the_former_decay_groups_resumes_with_the_configs(tmp_path, monkeypatch):
    """GPT-2's position table was decayed before it counted as an embedding table: resumed
    with embed_lr_mult != 1, the flat optimizer state gave the no-decay group (whose first
    parameter the table now is) the table's former decay, norms and biases included."""
    from pretrain import distributed
    from pretrain.train import optim, state

    def former(model, wd, mult=1.0):
        named, embed = optim._trainable(model, mult)
        decay = [p for n, p in named if p.dim() == 2 and not n.startswith("embed.")]
        rest = [p for n, p in named if not (p.dim() == 2 and not n.startswith("embed."))]
        return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0},
                *embed]
    mc = ModelConfig(arch="gpt2", d_model=32, n_layers=1, n_heads=2, seq_len=8, vocab_size=50)
    cfg = TrainConfig(weight_decay=0.1, embed_lr_mult=2.0)
    with monkeypatch.context() as m:
        m.setattr(optim, "param_groups", former)
        model = Transformer(mc)
        opt = optim.make_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    ckpt = state.save(tmp_path, 1, mc, model, opt, {"batch_rows": 2}, 2, distributed.Dist())
    again = Transformer(mc)
    opt2 = optim.make_optimizer(again, cfg)
    want = [g["weight_decay"] for g in opt2.param_groups]
    state.load(ckpt, again, opt2, distributed.Dist())
    assert [g["weight_decay"] for g in opt2.param_groups] == want == [0.1, 0.0, 0.0]


def test_the_grad_accum_hint_is_only_for_a_run_that_starts_over(tmp_path, capsys):
    """A relaunch that resumes its own checkpoints was told it "starts over" and to keep the
    other folder's grad_accum, which would have thrown its own steps away."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from pretrain.train import stage

    def checkpoint(folder, step):
        (folder / f"step-{step:07d}").mkdir(parents=True)
        (folder / f"step-{step:07d}" / "state.json").write_text(
            json.dumps({"step": step, "batch_rows": 8}))
        (folder / f"step-{step:07d}" / "checksums.json").write_text("{}")

    def launch(cfg: TrainConfig, folder) -> str:
        run = SimpleNamespace(key_parts={"config": {"train": asdict(cfg)}})
        stage._checkpoint_lineage(run, cfg, folder, 8, True)
        return capsys.readouterr().err
    one, two = TrainConfig(grad_accum=1), TrainConfig(grad_accum=2, batch_size=8)
    launch(one, tmp_path / "train-a")
    checkpoint(tmp_path / "train-a", 10)
    err = launch(two, tmp_path / "train-b")   # from step 0: the hint
    assert "keep train.grad_accum = 1 with 8 rows a micro-step" in err
    checkpoint(tmp_path / "train-b", 20)
    err = launch(two, tmp_path / "train-b")   # resumes its own step 20: listed, no hint
    assert "checkpoints of another config of this run" in err and "keep train.grad_accum" not in err
    assert "train-a (1 checkpoint, latest step 10, " in err   # it said "1 checkpoints"
    # each listing says what differs (a change of optimizer alone started over unexplained)
    assert "MB, trained with another train.batch_size, train.grad_accum)" in err
    launch(TrainConfig(grad_accum=2, batch_size=8, optimizer="muon"), tmp_path / "train-m")
    checkpoint(tmp_path / "train-m", 5)
    assert "MB, trained with another train.optimizer)" in launch(two, tmp_path / "train-b")
    # the same keyed train settings (log_every and keep_last are not in the key: they
    # split no folder, and are not named): the model or data moved
    launch(TrainConfig(grad_accum=2, batch_size=8, log_every=3, keep_last=9), tmp_path / "train-d")
    checkpoint(tmp_path / "train-d", 5)
    assert "MB, of another model, data or seed)" in launch(two, tmp_path / "train-b")
    # a launch refused before its first checkpoint (too large a batch for memory) leaves
    # only its lineage: not listed to every later run as "checkpoints of another config"
    launch(TrainConfig(batch_size=100_000, weight_decay=0.3), tmp_path / "train-c")
    err = launch(two, tmp_path / "train-b")
    assert str(tmp_path / "train-a") in err and "train-c" not in err
    # one that stopped before its first complete checkpoint, with its logs (or half a
    # checkpoint): said as such (it read "(0 checkpoints, 0.0 MB)")
    (tmp_path / "train-c" / "events.jsonl").write_text("{}\n")
    err = launch(two, tmp_path / "train-b")
    assert "train-c (no complete checkpoint: a run stopped before its first, " in err


def test_a_damaged_checkpoint_or_lineage_of_another_config_is_said(tmp_path, capsys):
    """Continuing an earlier config's checkpoints: its newest one damaged, the one before
    was taken without a word; an unreadable lineage.json dropped the folder silently."""
    from dataclasses import asdict

    from pretrain.rundir import file_sha256
    from pretrain.train import stage
    folder = tmp_path / "train-a"
    folder.mkdir()
    old, new = (TrainConfig(steps=n, schedule="wsd", decay_frac=0.25) for n in (16, 32))
    (folder / stage.LINEAGE).write_text(json.dumps({"lineage": "L", "train": asdict(old)}))
    for step in (8, 12):
        ckpt = folder / f"step-{step:07d}"
        ckpt.mkdir()
        (ckpt / "state.json").write_text(json.dumps({"step": step, "batch_rows": 8}))
        (ckpt / "w.bin").write_bytes(bytes(100))
        (ckpt / "checksums.json").write_text(json.dumps({
            n: {"bytes": (ckpt / n).stat().st_size, "sha256": file_sha256(ckpt / n)}
            for n in ("state.json", "w.bin")}))
    newest = folder / "step-0000012"
    assert stage.continuation(new, "L", [folder], 8) == newest   # the schedules agree to 12
    assert "not continuing" not in capsys.readouterr().err
    (newest / "w.bin").write_bytes(bytes(99) + b"x")   # the same size
    assert stage.continuation(new, "L", [folder], 8) == folder / "step-0000008"
    assert (f"train: not continuing from {newest}: damaged ({newest / 'w.bin'}: sha256 "
            "differs") in capsys.readouterr().err
    (folder / stage.LINEAGE).write_text("{bad")
    assert stage.continuation(new, "L", [folder], 8) is None
    assert (f"train: {folder / stage.LINEAGE} is unreadable (JSONDecodeError: "
            in capsys.readouterr().err)


def test_a_run_near_the_memory_limit_is_warned_and_the_advised_batch_leaves_a_margin(
        capsys):
    """The estimate is within 10% of measured peaks: a batch it sizes to the last byte was
    advised (and passed) and then killed for memory. Near the limit is a warning; the
    advice, refused or warned, leaves 10%."""
    mc = ModelConfig(d_model=64, n_layers=2, n_heads=4, seq_len=64, vocab_size=256)
    one = Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 1, "tp": 1})
    cfg = TrainConfig(batch_size=512)
    kw = dict(layout=Split(), checkpointing=False, optimizer="adamw", grad_accum=1, cpu=True,
              precision=resolve_precision(cfg.precision, torch.device("cpu")),
              fused_loss=cfg.loss_path(1) == "chunked")
    need = estimate(mc, 512, **kw).total
    check_memory(mc, cfg, one, torch.device("cpu"), have=need / 0.8)
    assert "warning" not in capsys.readouterr().err
    check_memory(mc, cfg, one, torch.device("cpu"), have=need / 0.95)
    err = capsys.readouterr().err
    assert "train: warning: the estimate is within 10% of the" in err
    advised = int(re.search(r"train.batch_size = (\d+) leaves a 10% margin", err)[1])
    with pytest.raises(PretrainError, match=r"needs about .* train.batch_size = \d+ leaves "
                                            r"a 10% margin") as e:
        check_memory(mc, cfg, one, torch.device("cpu"), have=need / 1.05)
    for batch, have in ((advised, need / 0.95),
                        (int(re.search(r"batch_size = (\d+)", str(e.value))[1]), need / 1.05)):
        fit = estimate(mc, batch, **kw).total
        assert 0.85 * have < fit <= MARGIN * have


def test_the_last_step_is_a_checkpoint_too(tmp_path, tmp_path_factory):
    """Its weights were only train/model.safetensors, which a later config of the run
    replaces: the earlier model was lost (its last checkpoint 70 steps before the end of a
    time budget), and nothing could continue from its end. Not where checkpoints are off."""
    tokens = make_tokens(tmp_path_factory)
    small_run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=20, checkpoint_every=8)
    last = state.complete(tmp_path / "ckpt")[-1]
    assert last.name == "step-0000020"
    want = load_file(tmp_path / "a" / "model.safetensors")
    got = io.load_any(last).state_dict()
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((last / "state.json").read_text())["data_pos"] == 20
    small_run(tokens, tmp_path / "b", tmp_path / "none", steps=4, checkpoint_every=0)
    assert state.complete(tmp_path / "none") == []


def test_an_interrupted_run_keeps_its_logs_and_says_interrupted(tmp_path, tmp_path_factory,
                                                                 monkeypatch, capsys):
    """Ctrl-C was told "the failed run's log ... are in": it did not fail."""
    tokens = make_tokens(tmp_path_factory)
    kill_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        small_run(tokens, tmp_path / "a", tmp_path / "ckpt", steps=8, checkpoint_every=4)
    err = capsys.readouterr().err
    assert f"train: the interrupted run's log, events and generations are in {tmp_path / 'ckpt'}" \
        in err and "failed" not in err
    assert (tmp_path / "ckpt" / "log.jsonl").read_text().count("\n") == 5   # steps 1-5


def test_init_from_a_folder_whose_weights_hold_nan_is_refused(tmp_path):
    """A Hugging Face folder carries no checksums: damaged in place, its NaN weights gave a
    NaN loss at step 0 and "training diverged: lower train.lr"."""
    from safetensors.torch import load_file, save_file

    from pretrain.config import PretrainError
    from pretrain.model import hf as model_hf
    from pretrain.model.config import ModelConfig
    from pretrain.model.transformer import Transformer
    from pretrain.train import stage
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                    seq_len=16, vocab_size=258))
    model_hf.export(model, tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    sd = load_file(weights)
    name = sorted(sd)[3]
    sd[name][0] = float("nan")
    save_file(sd, weights, metadata={"format": "pt"})
    with pytest.raises(PretrainError, match=r"train.init_from: .*hf: its weight \S+ holds NaN "
                                            r"or inf values \(a damaged file\?\)"):
        stage._init(TrainConfig(init_from=str(tmp_path / "hf")), None, 258)
    # what the loader refuses is named as the stage's other init_from errors are
    with pytest.raises(PretrainError, match=r"^train.init_from: .*safetensors: neither a run "
                                            "directory"):
        stage._init(TrainConfig(init_from=str(weights)), None, 258)
