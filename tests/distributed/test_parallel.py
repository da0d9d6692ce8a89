"""Tensor, sequence and pipeline parallelism on a device mesh, with gloo processes on CPU:
each layout takes the steps one process takes with the same global batch (fp32 tolerance),
its checkpoints resume under other layouts, and FSDP ranks hold half the state."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pretrain import distributed
from pretrain.config import ConfigError
from pretrain.model.config import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.plan.memory import Split, estimate
from pretrain.train.config import ParallelConfig, TrainConfig, check_layout
from pretrain.train.loop import RunPaths, train
from pretrain.train.parallelize import Layout, build
from pretrain.train.pipelining import stage_layers

from .common import model_config, train_config
from .conftest import losses, torchrun, weights, worker

MEMORY_WORKER = __file__.replace("test_parallel.py", "memory_worker.py")
# the default tier keeps one 2-process run of each kind (TP, PP); the layouts of 4 processes
# and the variants run in the slow tier (`make test-slow`, and CI)
SLOW = pytest.mark.slow


def check(model_cfg, cfg, lay: Layout) -> None:
    """Training's layout rules (`check_layout`, which plan asks too) for a mesh layout."""
    check_layout(model_cfg, cfg, lay.degrees)


def _same_run(out, ref, steps: int) -> None:
    got, want = losses(out), losses(ref)
    assert len(got) == len(want) == steps
    assert got == pytest.approx(want, abs=2e-4)
    a, b = weights(out), weights(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


@pytest.mark.parametrize("n, layout, batch, arch, name", [
    (2, "tp=2,dp_replicate=1", 8, "llama", "TP 2"),
    pytest.param(2, "tp=2,dp_replicate=1,sequence_parallel=0", 8, "llama", "TP 2", marks=SLOW),
    pytest.param(2, "tp=2,dp_replicate=1", 8, "gpt2", "TP 2", marks=SLOW),  # tied embeddings
    pytest.param(4, "tp=2,dp_shard=2,dp_replicate=1", 4, "llama", "FSDP 2 x TP 2", marks=SLOW),
])
def test_tensor_parallel_matches_one_process(tokens, reference, tmp_path, n, layout, batch,
                                             arch, name):
    res = worker(tokens, tmp_path / "run", n, batch=batch, parallel=layout, arch=arch, steps=20)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"({name})" in res.stderr
    _same_run(tmp_path / "run", reference(8, arch=arch, steps=20), 20)


@pytest.mark.slow
def test_sequence_parallel_scores_a_short_last_val_window(tokens, tmp_path):
    """More val windows asked for than the domain has: its last window is short (30 tokens
    of 33) and alone in its batch (88 windows in batches of 3), and the ranks that split
    positions score it padded to the whole length, as one process does."""
    res = worker(tokens, tmp_path / "run", 2, batch=3, parallel="tp=2,dp_replicate=1", steps=3,
                 eval_batches=30)
    assert res.returncode == 0, res.stderr[-3000:]
    one = tmp_path / "one"
    one.mkdir()
    train(train_config(3, 3, 2, eval_batches=30), model_config(), tokens, RunPaths(one), seed=5,
          device="cpu")
    val = [json.loads(x)["val_loss"] for x in (tmp_path / "run" / "log.jsonl").open()
           if "val_loss" in json.loads(x)]
    want = [json.loads(x)["val_loss"] for x in (one / "log.jsonl").open()
            if "val_loss" in json.loads(x)]
    assert val and val == pytest.approx(want, abs=2e-4)


@pytest.mark.parametrize("n, layout, batch, name", [
    # the default tier's pipeline run is the resume test below (PP 2, 1F1B, 6 steps)
    pytest.param(2, "pp=2,dp_replicate=1", 8, "PP 2", marks=SLOW),                 # 1F1B
    pytest.param(4, "pp=2,dp_shard=2,dp_replicate=1,pp_microbatches=2,pp_schedule=GPipe", 4,
                 "FSDP 2 x PP 2", marks=SLOW),
    pytest.param(4, "pp=2,pp_microbatches=2", 4, "DDP 2 x PP 2", marks=SLOW),
    pytest.param(4, "pp=2,tp=2,dp_replicate=1,sequence_parallel=0", 8, "TP 2 x PP 2", marks=SLOW),
    pytest.param(4, "pp=2,tp=2,dp_replicate=1", 8, "TP 2 x PP 2", id="TP 2 x PP 2 with SP",
                 marks=SLOW),
])
def test_pipeline_parallel_matches_one_process(tokens, reference, tmp_path, n, layout, batch,
                                               name):
    res = worker(tokens, tmp_path / "run", n, batch=batch, accum=1, parallel=layout, steps=20)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"({name})" in res.stderr
    _same_run(tmp_path / "run", reference(8, accum=1, steps=20), 20)
    counts = json.loads((tmp_path / "run" / "counts.json").read_text())
    ref_counts = json.loads((reference(8, accum=1, steps=20) / "counts.json").read_text())
    assert counts["val_loss_final"] == pytest.approx(ref_counts["val_loss_final"], abs=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("to_n, to_layout, to_batch", [
    (2, "tp=2,dp_replicate=1", 8),     # FSDP over 2 -> TP over 2
    (2, "dp_replicate=-1", 4),         # FSDP -> DDP
    (2, "pp=2,dp_replicate=1,pp_microbatches=2", 8),  # FSDP -> a pipeline of 2 stages
])
def test_a_checkpoint_resumes_under_another_layout(tokens, reference, tmp_path, to_n, to_layout,
                                                   to_batch):
    """Written by FSDP ranks (each its shards), killed after the step-3 checkpoint, resumed
    under another layout with the same global batch: the uninterrupted run's losses."""
    run = tmp_path / "run"
    accum = 1 if "pp=" in to_layout else 2
    killed = worker(tokens, run, 2, batch=8 // 2, accum=accum, parallel="dp_shard=-1", kill_at=4)
    assert killed.returncode != 0 and (run / "ckpt" / "step-0000003").is_dir()
    resumed = worker(tokens, run, to_n, batch=to_batch, accum=accum, parallel=to_layout)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "(step 3)" in resumed.stderr
    _same_run(run, reference(8, accum=accum), 6)



def test_a_pipeline_checkpoint_resumes_under_the_pipeline(tokens, reference, tmp_path):
    """Killed after the step-3 checkpoint and resumed, 2 stages (1F1B) take one process's
    steps and score its held-out loss. Each stage had saved its optimizer's param groups
    under the same index keys, so one stage's list survived: the other's parameters lost
    their group on load (KeyError 'betas' at the resumed run's first step)."""
    run, pp = tmp_path / "run", "pp=2,dp_replicate=1,pp_microbatches=2"
    killed = worker(tokens, run, 2, batch=8, accum=1, parallel=pp, kill_at=4)
    assert killed.returncode != 0 and (run / "ckpt" / "step-0000003").is_dir()
    resumed = worker(tokens, run, 2, batch=8, accum=1, parallel=pp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "(step 3)" in resumed.stderr
    assert "(PP 2)" in resumed.stderr
    _same_run(run, reference(8, accum=1), 6)
    got = json.loads((run / "counts.json").read_text())
    want = json.loads((reference(8, accum=1) / "counts.json").read_text())
    assert got["val_loss_final"] == pytest.approx(want["val_loss_final"], abs=2e-4)

@pytest.mark.slow
def test_a_pipeline_with_dropout_resumes_bit_identically(tokens, reference, tmp_path):
    """The stages draw dropout masks for different layers, so their generators part; the
    checkpoint kept rank 0's alone and put it on both, and the resumed run's losses left
    the uninterrupted run's at the first step after the checkpoint. The pipeline also
    scored the held-out set with dropout on (step 0's val loss 6.2543 for 6.2547)."""
    pp = "pp=2,dp_replicate=1,pp_microbatches=2"
    whole = worker(tokens, tmp_path / "whole", 2, batch=8, accum=1, parallel=pp, dropout=0.1)
    assert whole.returncode == 0, whole.stderr[-3000:]
    initial = json.loads((reference(8, accum=1, steps=20) / "counts.json").read_text())
    got = json.loads((tmp_path / "whole" / "counts.json").read_text())
    assert got["val_loss_initial"] == pytest.approx(initial["val_loss_initial"], abs=1e-5)
    run = tmp_path / "run"
    killed = worker(tokens, run, 2, batch=8, accum=1, parallel=pp, dropout=0.1, kill_at=4)
    assert killed.returncode != 0 and (run / "ckpt" / "step-0000003").is_dir()
    resumed = worker(tokens, run, 2, batch=8, accum=1, parallel=pp, dropout=0.1)
    assert resumed.returncode == 0 and "(step 3)" in resumed.stderr, resumed.stderr[-3000:]
    assert losses(run) == losses(tmp_path / "whole")
    a, b = weights(run), weights(tmp_path / "whole")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_pipeline_resumed_as_tensor_parallel_ranks_keeps_their_weights_equal(tokens, tmp_path):
    """Each stage of a pipeline saves its own generator; resumed under tensor parallelism,
    each rank had taken back its stage's and drawn other dropout masks than its peer on
    weights both hold whole: the norms parted (3e-3 by step 8). Another layout now starts
    every rank from rank 0's generator."""
    run = tmp_path / "run"
    killed = worker(tokens, run, 2, batch=8, accum=1, parallel="pp=2,dp_replicate=1",
                    dropout=0.1, kill_at=4)
    assert killed.returncode != 0 and (run / "ckpt" / "step-0000003").is_dir()
    resumed = worker(tokens, run, 2, batch=8, accum=1, dropout=0.1, check_replicas=1,
                     parallel="tp=2,dp_replicate=1,sequence_parallel=0")
    assert resumed.returncode == 0 and "(step 3)" in resumed.stderr, resumed.stderr[-3000:]
    spread = json.loads((run / "replicas.json").read_text())
    assert any("norm" in k for k in spread) and max(spread.values()) == 0.0, spread


@pytest.mark.slow
def test_a_sharded_run_without_checkpoints_keeps_none(tokens, reference, tmp_path):
    """``checkpoint_every = 0`` left the final step's model and optimizer shards in the
    checkpoint folder under FSDP (16 bytes a parameter), where one process leaves none."""
    run = tmp_path / "run"
    res = worker(tokens, run, 2, batch=4, parallel="dp_shard=-1", steps=3, checkpoint_every=0)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list((run / "ckpt").glob("step-*")) and not (run / "ckpt" / ".final").exists()
    _same_run(run, reference(8, accum=2, steps=3), 3)


@pytest.mark.slow
def test_fsdp_ranks_hold_half_the_state_and_never_the_whole_model(tmp_path):
    """Meta-device init: each of 2 FSDP ranks holds half the parameters, gradients and
    AdamW state of one process, and never built the whole model (its resident memory after
    building is below one process's by most of the half it does not hold)."""
    env_args = [MEMORY_WORKER, str(tmp_path / "two"), "dp_shard=-1,dp_replicate=1"]
    assert torchrun(env_args).returncode == 0
    one = torchrun([MEMORY_WORKER, str(tmp_path / "one")], n=1)
    assert one.returncode == 0, one.stderr[-2000:]
    ref = json.loads((tmp_path / "one" / "rank0.json").read_text())
    for rank in (0, 1):
        got = json.loads((tmp_path / "two" / f"rank{rank}.json").read_text())
        for key in ("params", "grads", "optimizer"):
            assert got[key] / ref[key] == pytest.approx(0.5, abs=0.01), key
        half_mb = ref["params"] / 2 / 2**20
        assert got["rss_after_build_mb"] < ref["rss_after_build_mb"] - half_mb / 2


@pytest.mark.slow
@pytest.mark.parametrize("sp", [1, 0])
def test_tensor_parallel_ranks_save_what_the_estimate_counts(tmp_path, sp):
    """Per token, what each of 2 TP ranks saves for backward (and the logits it returns)
    equals the memory estimate: the head's gathered output, the logits, is whole on every
    rank, and so are the column-parallel matmuls' inputs (and without sequence parallelism
    the norms). Split by the TP degree, a reviewer measured 1.37-1.68x the estimate."""
    spec = f"tp=2,dp_replicate=1,sequence_parallel={sp}"
    res = torchrun([MEMORY_WORKER, str(tmp_path), spec])
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = ModelConfig(d_model=768, n_layers=8, n_heads=8, n_kv_heads=4, seq_len=64,
                      vocab_size=16384)   # memory_worker's model

    def activations(batch: int) -> float:
        return estimate(cfg, batch, layout=Split(tp=2, sequence_parallel=bool(sp)),
                        fused_loss=False).activations
    want = (activations(4) - activations(2)) / (2 * 64)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())["saved_per_token"]
        assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.slow
def test_a_group_torchrun_restarts_after_a_worker_died_connects_at_once(tmp_path):
    """torchrun --max-restarts after a worker's death: the restarted gloo group read the
    dead attempt's addresses from the agent's store ('connectFullMesh failed ... Connection
    refused'), each such failure taking a restart (two deaths with 3 restarts: failed in
    3 of 3 tries), or hung. Each attempt joins under its own prefix: 2 deaths, 2 restarts."""
    args = ["--max-restarts=2", __file__.replace("test_parallel.py", "restart_worker.py"),
            str(tmp_path), "2"]
    res = torchrun(args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["2 2", "2 2"]
    assert "Connection refused" not in res.stderr


def test_layouts_the_model_cannot_take_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"pp 1 x dp_replicate 1 x dp_shard 1 x tp 2 = 2 "
                                          r"processes, but there are 4"):
        ParallelConfig(tp=2, dp_replicate=1).degrees(4)
    assert ParallelConfig(dp_shard=-1).degrees(8) == {"pp": 1, "dp_replicate": 1, "dp_shard": 8, "tp": 1}
    assert ParallelConfig(tp=2, pp=2).degrees(8)["dp_replicate"] == 2
    cfg = TrainConfig()

    def layout(**deg: int) -> Layout:
        return Layout({"pp": 1, "dp_replicate": 1, "dp_shard": 1, "tp": 1, **deg})
    with pytest.raises(ConfigError, match="not implemented for mla"):
        check(model_config("mla"), cfg, layout(tp=2))
    with pytest.raises(ConfigError, match="must divide the kv heads"):
        check(model_config(), cfg, layout(tp=4))
    with pytest.raises(ConfigError, match="DDP with tensor parallelism"):
        check(model_config(), cfg, layout(tp=2, dp_replicate=2))
    # gpt2 ties whatever model.tie_embeddings says: the advice to untie them could not work
    with pytest.raises(ConfigError, match="untied embeddings .*: gpt2 always ties them, use "
                                          "model.arch = 'llama' or 'mla'"):
        check(model_config("gpt2"), cfg, layout(pp=2))
    with pytest.raises(ConfigError, match="set model.tie_embeddings = false"):
        check(dataclasses.replace(model_config(), tie_embeddings=True), cfg, layout(pp=2))
    with pytest.raises(ConfigError, match="grad_accum = 1"):
        check(model_config(), TrainConfig(grad_accum=2), layout(pp=2))
    with pytest.raises(ConfigError, match=r"the 1F1B schedule needs at least one per stage"):
        check(model_config(), TrainConfig(parallel=ParallelConfig(pp_microbatches=1)),
              layout(pp=2))
    check(model_config(), TrainConfig(parallel=ParallelConfig(pp_microbatches=1,
                                                              pp_schedule="GPipe")), layout(pp=2))
    odd = dataclasses.replace(model_config(), seq_len=33)
    with pytest.raises(ConfigError, match=r"must divide model.seq_len \(33\) with sequence"):
        check(odd, cfg, layout(tp=2, dp_shard=2))
    check(odd, TrainConfig(parallel=ParallelConfig(sequence_parallel=False)),
          layout(tp=2, dp_shard=2))
    with pytest.raises(ConfigError, match="train.compile with train.parallel.tp > 1"):
        check(model_config(), TrainConfig(compile=True), layout(tp=2, dp_shard=2))
    with pytest.raises(ConfigError, match="'chunked' needs the whole output head"):
        check(model_config(), TrainConfig(loss="chunked"), layout(tp=2, dp_shard=2))
    check(model_config(), TrainConfig(), layout(tp=2, pp=2))
    check(model_config(), TrainConfig(parallel=ParallelConfig(sequence_parallel=False)),
          layout(tp=2, pp=2))


def test_pipeline_stages_split_the_layers_and_keep_their_names():
    assert [list(stage_layers(10, 4, s)) for s in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    cfg = model_config()
    whole = Transformer(cfg)
    parts = []
    for stage in range(2):
        torch.manual_seed(0)
        model, _ = build(cfg, TrainConfig(), Layout({"pp": 2, "dp_replicate": 1, "dp_shard": 1,
                                                      "tp": 1}, coords=(stage, 0, 0, 0)),
                         torch.device("cpu"))
        parts.append(model.state_dict())
    assert set(parts[0]) | set(parts[1]) == set(whole.state_dict())
    assert "embed.weight" in parts[0] and "head.weight" in parts[1]
    torch.manual_seed(0)
    whole = Transformer(cfg)  # the stages hold the whole model's initial weights
    for name, t in whole.state_dict().items():
        assert torch.equal(t, (parts[0] | parts[1])[name]), name


def test_one_process_builds_the_same_weights_on_meta_as_directly():
    for arch in ("llama", "gpt2", "mla"):
        torch.manual_seed(3)
        direct = Transformer(model_config(arch)).state_dict()
        torch.manual_seed(3)
        built, _ = build(model_config(arch), TrainConfig(), Layout(ParallelConfig().degrees(1)),
                         torch.device("cpu"))
        assert all(torch.equal(direct[k], v) for k, v in built.state_dict().items()), arch
    assert distributed.from_env().world == 1
