import dataclasses
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pretrain.config import ConfigError, apply_override, build, parse_override_args, to_toml
from pretrain.data.hf_source import HuggingFaceSource
from pretrain.data.pysource import PythonInstallationSource
from pretrain.data.sources import LocalSource
from pretrain.run_config import RunConfig, load_config, shipped_configs


def test_defaults_build_and_match_the_quickstart_file():
    cfg = load_config(None)
    assert cfg.name == "quickstart"
    assert cfg.model.arch == "llama"
    assert [type(s) for s in cfg.data.sources] == [PythonInstallationSource] * 2
    assert [s.part for s in cfg.data.sources] == ["code", "prose"]


def test_precedence_defaults_toml_overrides(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text('name = "mine"\n[train]\nlr = 1e-3\nsteps = 7\n')
    cfg = load_config(str(toml), [("train.lr", "2e-4")])
    assert cfg.name == "mine"
    assert cfg.train.steps == 7            # from the file
    assert cfg.train.lr == pytest.approx(2e-4)   # override beats file
    assert cfg.train.batch_size == RunConfig().train.batch_size  # default kept


def test_int_given_for_float_is_accepted_from_toml(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nlr = 1\n")
    assert load_config(str(toml)).train.lr == 1.0


@pytest.mark.parametrize("overrides, message", [
    ([("nope", "1")], "unknown config key 'nope'; allowed here: data, device, eval"),
    ([("train.lrr", "1")], "unknown config key 'train.lrr'; did you mean 'train.lr'? allowed here: activation_checkpointing"),
    ([("model.d_model", "abc")], "model.d_model: expected int, got 'abc'"),
    ([("train.lr", "fast")], "train.lr: expected float, got 'fast'"),
    ([("model.tie_embeddings", "maybe")], "model.tie_embeddings: expected true or false"),
    ([("model.arch", "gpt9")], "model.arch: 'gpt9' is not allowed (did you mean 'gpt2'?); choose one of 'llama'"),
    ([("data.sources.0.type", "ftp")], "data.sources.0.type: 'ftp' is not allowed; choose one of "
                                        "'python-installation' | 'local' | 'huggingface'"),
    ([("data.sources.5.max_bytes", "1")], "data.sources.5: no list element '5'"),
    ([("model.n_heads", "3")], "model.d_model (128) must be divisible by n_heads (3)"),
    ([("train.warmup_steps", "-1")], "train.warmup_steps must be >= 0"),
    # the step-0 sample probe's traceback after the model was built
    ([("train.probe_new_tokens", "-1")], "train.probe_new_tokens must be >= 0, got -1"),
    ([("train.probe_prompt_tokens", "-3")], "train.probe_prompt_tokens must be >= 0, got -3"),
    # a shape crash deep in torch, a NaN loss blamed on the learning rate, before
    ([("model.ffn_hidden", "-8")], "ffn_hidden must be >= 0 (0 = the default), got -8"),
    ([("model.rope_theta", "0")], "rope_theta must be a finite number > 0, got 0.0"),
    ([("model.init_std", "-1")], "init_std must be a finite number >= 0, got -1.0"),
    ([("model.norm_eps", "-1e-5")], "norm_eps must be a finite number >= 0"),
    # AdamW's traceback after the data had loaded, or gradient ascent without a word
    ([("train.beta1", "1.0")], "train.beta1 must be within [0, 1), got 1.0"),
    ([("train.beta2", "-0.5")], "train.beta2 must be within [0, 1), got -0.5"),
    ([("train.embed_lr_mult", "-1")],
     "embed_lr_mult must be >= 0 (0 = the embedding table frozen), got -1.0"),
    ([("train.weight_decay", "-0.1")], "train.weight_decay must be >= 0, got -0.1"),
    ([("train.grad_clip", "-1")], "train.grad_clip must be >= 0 (0 = off), got -1.0"),
    # one message for several keys, not saying which (lr and min_lr_ratio; checkpoint_every,
    # keep_last and spike_zscore; the divergence rules)
    ([("train.lr", "-1e-3")], "train.lr must be > 0, got -0.001"),
    ([("train.keep_last", "0")], "train.keep_last must be >= 1, got 0"),
    ([("train.spike_zscore", "-1")], "train.spike_zscore must be >= 0 (0 = off), got -1.0"),
    ([("train.divergence_lr_factor", "2")],
     "train.divergence_lr_factor must be within (0, 1], got 2.0"),
    ([("train.divergence_window", "1")],
     "train.divergence_window must be 0 (off) or >= 2, got 1"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_rejected(value, tmp_path: Path):
    with pytest.raises(ConfigError, match="train.lr: expected a finite number"):
        load_config(None, [("train.lr", value)])
    toml = tmp_path / "c.toml"
    toml.write_text(f"[train]\ngrad_clip = {value}\n")
    with pytest.raises(ConfigError, match="train.grad_clip: expected a finite number"):
        load_config(str(toml))


def test_toml_strings_are_not_coerced(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nn_layers = "6"\n')
    with pytest.raises(ConfigError, match="model.n_layers: expected int, got '6'"):
        load_config(str(toml))
    toml.write_text('[model]\ntie_embeddings = "yes"\n')
    with pytest.raises(ConfigError, match="model.tie_embeddings: expected bool"):
        load_config(str(toml))


def test_an_exact_float_is_an_int_in_toml_as_on_the_command_line(tmp_path: Path):
    """`steps = 1e3` in a file was refused while --train.steps=1e3 was 1000."""
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nsteps = 1e3\nbatch_size = 8.0\n")
    cfg = load_config(str(toml))
    assert (cfg.train.steps, cfg.train.batch_size) == (1000, 8)
    assert type(cfg.train.steps) is int
    assert load_config(None, [("train.steps", "1e3")]).train.steps == 1000
    toml.write_text("[train]\nsteps = 1.5e2\n")
    assert load_config(str(toml)).train.steps == 150
    toml.write_text("[train]\nsteps = 1000.5\n")
    with pytest.raises(ConfigError, match="train.steps: expected int, got 1000.5"):
        load_config(str(toml))


@pytest.mark.parametrize("overrides, message", [
    ([("sample.prompts.0.x", "1")], "sample.prompts.0 is a value, not a section"),
    ([("tokenizer.pattern", "(")], "tokenizer.pattern: invalid regex"),
    ([("tokenizer.special_tokens", '["<|bos|>", "<|eos|>", "<|bos|>"]')], "has duplicates"),
    # the Hugging Face export matched "a" in text ("banana" came back "bnn")
    ([("tokenizer.special_tokens", '["<|bos|>", "<|eos|>", "a"]')],
     "special_tokens: 'a' is ordinary text; a special token's text is found"),
    ([("tokenizer.special_tokens", '["<|bos|>", "<|eos|>", " "]')], "' ' is blank;"),
    ([("seed", "-5")], "seed must be >= 0"),
    ([("seed", str(2**64))], "below 2**64"),   # torch's generators failed at train
    # another tool's word for an allowed value is suggested (gpu was told "cpu")
    ([("device", "gpu")], "'gpu' is not allowed (did you mean 'cuda'?)"),
    # a key of another section is named where it lives (train.vocab_size was told
    # train.batch_size; train.seq_len and model.lr had no hint)
    ([("train.vocab_size", "9")], "'train.vocab_size': it is 'tokenizer.vocab_size' or "
                                  "'model.vocab_size'"),
    ([("train.seq_len", "64")], "'train.seq_len': it is 'model.seq_len'"),
    ([("lr", "1")], "unknown config key 'lr': it is 'train.lr'"),
    ([("train.precision", "bfloat16")], "(did you mean 'bf16'?)"),
])
def test_more_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_undecodable_or_directory_config_files(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfename = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(str(tmp_path))


def test_a_config_named_by_a_path_is_that_file_and_a_bare_name_a_shipped_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """./quickstart read the shipped quickstart, not ./quickstart.toml; hf/x (x.toml there)
    was not found while /abs/x was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.toml").write_text('name = "mine"\n')
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "x.toml").write_text('name = "x"\n')
    for arg in ("./quickstart", "quickstart.toml", str(tmp_path / "quickstart")):
        assert load_config(arg).name == "mine", arg
    for arg in ("hf/x", "hf/x.toml", str(tmp_path / "hf" / "x")):
        assert load_config(arg).name == "x", arg
    with pytest.raises(ConfigError, match=r"config 'hf/y': no such file \(nor hf/y.toml\)"):
        load_config("hf/y")
    # a bare name is the shipped config, and a file of that name here is said not read
    assert load_config("quickstart").name == "quickstart"
    assert "./quickstart.toml here is not read" in capsys.readouterr().err
    # a bare name that is no shipped config, with its .toml here: said how to name it
    (tmp_path / "my.toml").write_text('name = "my"\n')
    with pytest.raises(ConfigError, match=r"neither a file nor a shipped config \(.*\); "
                                          r"\./my\.toml is here: name it 'my\.toml' or \./my$"):
        load_config("my")


def test_a_bad_value_of_the_file_names_the_file_and_one_of_an_override_does_not(
        tmp_path: Path):
    f = tmp_path / "a.toml"
    f.write_text('[train]\nsteps = "twenty"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{f}: train.steps: expected int, got")):
        load_config(str(f))
    assert load_config(str(f), [("train.steps", "5")]).train.steps == 5   # mended on the line
    f.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{f}: unknown config key 'train.stepz'")):
        load_config(str(f))
    f.write_text("[train]\nsteps = 3\n")
    with pytest.raises(ConfigError, match="^train.lr: expected float"):
        load_config(str(f), [("train.lr", "x")])


def test_a_config_with_a_byte_order_mark_or_a_tilde_path_loads(tmp_path: Path, monkeypatch):
    """A TOML file saved with a BOM (Windows editors) said only "Invalid statement (at line 1,
    column 1)"; `--config=~/x.toml`, which no shell expands, was "neither a file nor..."."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "bom.toml").write_bytes("\ufeffname = \"bom\"\n".encode())
    assert load_config(str(tmp_path / "bom.toml")).name == "bom"
    assert load_config("~/bom.toml").name == "bom"


def test_unknown_key_in_toml_is_rejected(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text("[model]\nd_modle = 64\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.d_modle'"):
        load_config(str(toml))


def test_invalid_toml_names_the_file(tmp_path: Path):
    toml = tmp_path / "broken.toml"
    toml.write_text("[model\n")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_config(str(toml))


def test_missing_config_lists_shipped_ones():
    with pytest.raises(ConfigError, match="quickstart"):
        load_config("no-such-config")


def test_source_variants_dispatch_on_type(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text('[[data.sources]]\ntype = "local"\npaths = ["x/*.jsonl"]\ntext_field = "body"\n'
                    '[[data.sources]]\ntype = "huggingface"\nname = "HuggingFaceFW/fineweb-edu"\n'
                    'subset = "sample-10BT"\nmin_int_score = 3\n')
    cfg = load_config(str(toml))
    local, hf = cfg.data.sources
    assert isinstance(local, LocalSource) and local.text_field == "body"
    assert isinstance(hf, HuggingFaceSource) and hf.min_int_score == 3
    # a field of another variant is an unknown key for this one
    with pytest.raises(ConfigError, match="unknown config key 'data.sources.0.part'"):
        load_config(str(toml), [("data.sources.0.part", "code")])


def test_list_override_parses_toml_syntax():
    cfg = load_config(None, [("sample.prompts", '["a", "b c"]')])
    assert cfg.sample.prompts == ["a", "b c"]
    # a table as a TOML inline table (it was "expected a table ..., got '{min_chars=100}'"),
    # and a key inside a list typed before it ("train.mixture is a value, not a section")
    cfg = load_config(None, [("data.clean", "{min_chars = 100}"),
                             ("train.mixture", '[{domain = "code"}, {domain = "prose"}]'),
                             ("train.mixture.0.weight", "3")])
    assert cfg.data.clean.min_chars == 100
    assert [(m.domain, m.weight) for m in cfg.train.mixture] == [("code", 3.0), ("prose", 1.0)]


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    cfg = load_config(str(path))
    assert cfg.name
    # and it round-trips through the TOML that the run directory stores
    assert build(RunConfig, tomllib.loads(to_toml(cfg))) == cfg


def test_shipped_configs_include_quickstart_and_fineweb():
    names = {p.stem for p in shipped_configs()}
    assert "quickstart" in names
    assert any(n.startswith("fineweb-edu-") for n in names)


def test_parse_override_args_forms():
    assert parse_override_args(["--a.b=1", "--c", "2", "--d-e=x"]) == [
        ("a.b", "1"), ("c", "2"), ("d_e", "x")]
    with pytest.raises(ConfigError, match="needs a value"):
        parse_override_args(["--a.b"])
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse_override_args(["stray"])


def test_override_into_a_value_is_an_error():
    tree = {"train": {"lr": 1.0}}
    with pytest.raises(ConfigError, match="train.lr is a value, not a section"):
        apply_override(tree, "train.lr.x", "1")


def test_relative_paths_are_stored_absolute_and_names_are_kept(tmp_path: Path, monkeypatch):
    """A config's relative paths are relative to where the command runs; the built config
    holds them absolute (what the run's config.toml records), names stay names."""
    here = tmp_path / "here"
    (here / "docs").mkdir(parents=True)
    (here / "docs" / "a.jsonl").write_text('{"text": "x"}\n')
    (here / "local-ds").mkdir()
    (here / "parquet").mkdir()   # a folder named like a packaged builder: the builder still
    (here / "mine").mkdir()
    for task in ("mine/other.jsonl", "task.jsonl"):
        (here / task).write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    monkeypatch.chdir(here)
    (here / "c.toml").write_text(
        'runs_dir = "out/runs"\n'
        '[[data.sources]]\ntype = "local"\npaths = ["docs/*.jsonl", "~/never/*.txt"]\n'
        '[[data.sources]]\ntype = "huggingface"\nname = "HuggingFaceFW/fineweb-edu"\n'
        '[[data.sources]]\ntype = "huggingface"\nname = "local-ds"\n'
        '[[data.sources]]\ntype = "huggingface"\nname = "parquet"\n'
        'data_files = ["shards/*.parquet", "hf://datasets/a/b/x.parquet"]\n'
        '[data.url]\nblock_domains_file = "lists/adult"\n'
        '[data.decontam]\nbenchmarks = ["bench/x.jsonl"]\n'
        '[tokenizer]\npretrained = "llama3:tok/llama.tiktoken"\ncompare_with = "gpt2"\n'
        '[train]\ninit_from = "../old/runs/base"\n'
        '[eval]\ntasks = ["hellaswag", "mine/other.jsonl", "task.jsonl"]\ntasks_dir = "evals"\n')
    cfg = load_config("c.toml")
    local, hub, folder, files = cfg.data.sources
    assert cfg.runs_dir == str(here / "out" / "runs")
    assert local.paths == [str(here / "docs" / "*.jsonl"), str(Path.home() / "never" / "*.txt")]
    assert hub.name == "HuggingFaceFW/fineweb-edu"          # a Hub id: no such folder here
    assert folder.name == str(here / "local-ds")
    assert files.name == "parquet"
    assert files.data_files == [str(here / "shards" / "*.parquet"), "hf://datasets/a/b/x.parquet"]
    assert cfg.data.url.block_domains_file == str(here / "lists" / "adult")
    assert cfg.data.decontam.benchmarks == [str(here / "bench" / "x.jsonl")]
    assert cfg.tokenizer.pretrained == f"llama3:{here / 'tok' / 'llama.tiktoken'}"
    assert cfg.tokenizer.compare_with == "gpt2"
    assert cfg.train.init_from == str(tmp_path / "old" / "runs" / "base")
    assert cfg.eval.tasks == ["hellaswag", str(here / "mine" / "other.jsonl"),
                              str(here / "task.jsonl")]
    assert cfg.eval.tasks_dir == str(here / "evals")
    # the decontamination's eval files follow from the resolved [eval]
    assert cfg.data.decontam.eval_benchmarks == [str(here / "mine" / "other.jsonl"),
                                                 str(here / "task.jsonl")]
    # unset paths stay unset
    assert cfg.eval.harness_include == "" and cfg.data.language.model_path == ""

    # the recorded config names the same files from another directory
    (here / "recorded.toml").write_text(to_toml(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = load_config(str(here / "recorded.toml"))
    assert to_toml(again) == to_toml(cfg)


def test_environment_variables_in_paths_are_expanded_or_named_when_unset(tmp_path: Path,
                                                                          monkeypatch):
    """``$SCRATCH/runs`` made a folder named ``$SCRATCH`` under the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    (tmp_path / "c.toml").write_text(
        'runs_dir = "${SCRATCH}/runs"\n'
        '[[data.sources]]\ntype = "local"\npaths = ["$SCRATCH/docs/*.jsonl"]\n'
        '[tokenizer]\npretrained = "llama3:$SCRATCH/tok.tiktoken"\n')
    cfg = load_config("c.toml")
    assert cfg.runs_dir == str(tmp_path / "scratch" / "runs")
    assert cfg.data.sources[0].paths == [str(tmp_path / "scratch" / "docs" / "*.jsonl")]
    assert cfg.tokenizer.pretrained == f"llama3:{tmp_path / 'scratch' / 'tok.tiktoken'}"
    with pytest.raises(ConfigError, match=r"runs_dir: '\$NOT_SET_HERE/r' names the environment "
                                          r"variable \$NOT_SET_HERE, which is not set here"):
        load_config("c.toml", [("runs_dir", "$NOT_SET_HERE/r")])
    monkeypatch.setenv("SET_HERE", "x")   # a shell form is no unset variable
    with pytest.raises(ConfigError, match=r"'\$\{SET_HERE:-/d\}/r': \$\{SET_HERE:-/d\} is a "
                                          r"shell form not read here"):
        load_config("c.toml", [("runs_dir", "${SET_HERE:-/d}/r")])
    # a file of that very name is that file
    (tmp_path / "$NOT_SET_HERE").mkdir()
    assert load_config("c.toml", [("runs_dir", "$NOT_SET_HERE")]).runs_dir == \
        str(tmp_path / "$NOT_SET_HERE")


def test_a_folder_on_the_data_files_side_keeps_them_relative_to_it(tmp_path: Path, monkeypatch):
    # with name a dataset folder, data_files are relative to it (as `datasets` reads them)
    (tmp_path / "ds").mkdir()
    monkeypatch.chdir(tmp_path)
    src = build(HuggingFaceSource, {"name": "ds", "data_files": ["train/*.parquet"]})
    assert src.name == str(tmp_path / "ds") and src.data_files == ["train/*.parquet"]


@pytest.mark.parametrize("domain", ["all", "tasks", "harness", "web.en", "web en"])
def test_a_domain_the_eval_results_could_not_hold_is_refused(domain, tmp_path):
    """results.json keys held-out domains beside "all", "tasks", ...: a domain named "all"
    overwrote the overall figures, and one with a dot could not be gated. A source's
    default label (a dataset id's last part, "dclm-baseline-1.0") is left as it was."""
    with pytest.raises(ConfigError, match=f"data.sources.0.domain = '{domain}' would be"):
        load_config(None, [("data.sources.0.domain", domain), ("runs_dir", str(tmp_path))])
    load_config(None, [("data.sources.0.domain", "web-en_2"), ("runs_dir", str(tmp_path))])


def test_init_from_is_keyed_by_the_weights_it_loads_not_the_base_runs_checkpoints(tmp_path):
    """Removing the base run's old checkpoints made a finished continued run out of date (a
    killed one started over at step 0 under a new key)."""
    import shutil

    from pretrain.train.config import TrainConfig
    base = tmp_path / "base"
    for folder in (base / "train", base / "checkpoints" / "train-k" / "step-0000010"):
        folder.mkdir(parents=True)
        (folder / "model_config.json").write_text("{}")
    (base / "train" / "model.safetensors").write_bytes(b"w" * 10)
    cfg = TrainConfig(init_from=str(base))
    before = cfg.init_fingerprint()
    assert [Path(p).relative_to(base).as_posix() for p, _, _ in before] == [
        "train/model.safetensors", "train/model_config.json"]
    shutil.rmtree(base / "checkpoints")
    assert cfg.init_fingerprint() == before
    (base / "train" / "model.safetensors").write_bytes(b"v" * 11)   # other weights: rerun
    assert cfg.init_fingerprint() != before


def test_model_settings_a_continued_run_sets_against_its_checkpoint_are_said(capsys):
    """A longer seq_len (or another width) trained silently at the checkpoint's."""
    from pretrain.model.config import ModelConfig
    from pretrain.train.stage import _ignored_model_settings
    taken = ModelConfig(d_model=64, n_layers=2, n_heads=2, seq_len=64, vocab_size=512)
    _ignored_model_settings(replace(taken, seq_len=256, n_heads=4, vocab_size=1024), taken)
    err = capsys.readouterr().err
    assert "not used: model.n_heads = 4 (it has 2), model.seq_len = 256 (it has 64)\n" in err
    # a default is said too: --model.seq_len=128 beside init_from was dropped unsaid
    _ignored_model_settings(ModelConfig(d_model=64, n_layers=2, n_heads=2), taken)
    assert "not used: model.seq_len = 128 (it has 64)\n" in capsys.readouterr().err
    _ignored_model_settings(replace(taken, vocab_size=1024), taken)   # the same model
    assert capsys.readouterr().err == ""
    # compared as the model uses them: ffn_hidden 0 is its size, gpt2 ties and has no kv
    # heads of its own (an exact GPT-2 config was told its n_kv_heads, ffn_hidden and
    # tie_embeddings were not used)
    _ignored_model_settings(replace(taken, ffn_hidden=taken.hidden), taken)
    gpt2 = ModelConfig(arch="gpt2", d_model=64, n_layers=2, n_heads=2, seq_len=64)
    _ignored_model_settings(gpt2, replace(gpt2, ffn_hidden=256, n_kv_heads=2,
                                          tie_embeddings=True, kv_lora_rank=8))
    assert capsys.readouterr().err == ""
    _ignored_model_settings(replace(gpt2, bias=False), gpt2)
    assert "not used: model.bias = False (it has True)\n" in capsys.readouterr().err


def test_a_continued_run_drawing_its_sources_batches_again_is_said(tmp_path, capsys):
    """Batches are drawn by seed and step from step 0: from a run of ours with this seed,
    on its data, the continued run saw its batches again in their order, unsaid."""
    from pretrain.train.stage import _same_seed
    run = tmp_path / "runs" / "base"
    (run / "checkpoints" / "train-k" / "step-0000004").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "config.toml").write_text('name = "base"\nseed = 7\n\n[train]\nsteps = 4\n')
    for init in (run, run / "train", run / "checkpoints" / "train-k" / "step-0000004"):
        _same_seed(init, 7)
        assert f"{run} was trained with seed = 7 too" in capsys.readouterr().err
        _same_seed(init, 8)
        assert capsys.readouterr().err == ""
    (tmp_path / "hf").mkdir()   # an HF folder: nothing known of its batches
    _same_seed(tmp_path / "hf", 7)
    assert capsys.readouterr().err == ""


def test_an_option_added_keyed_if_set_keeps_the_keys_of_configs_without_it(tmp_path):
    """A source's separator is in the data key only when set; the same rule holds for a
    section's own fields and for dataclasses at any depth."""
    import dataclasses
    from typing import ClassVar

    from pretrain.config import fingerprint, keyed
    from pretrain.data.config import DataConfig
    from pretrain.data.sources import LocalSource

    @dataclasses.dataclass
    class Inner:
        a: int = 1
        new: str = ""
        KEYED_IF_SET: ClassVar[tuple[str, ...]] = ("new",)

    @dataclasses.dataclass
    class Section:
        inner: list[Inner] = dataclasses.field(default_factory=lambda: [Inner()])
        new: str = ""
        KEYED_IF_SET: ClassVar[tuple[str, ...]] = ("new",)
    assert keyed(Section()) == {"inner": [{"a": 1}]}
    assert keyed(Section(new="x", inner=[Inner(new="y")])) == {
        "inner": [{"a": 1, "new": "y"}], "new": "x"}
    (tmp_path / "a.txt").write_text("x")
    plain = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "a.txt")])])
    before = dataclasses.asdict(plain)
    before["sources"][0].pop("separator")   # the key as it was before the option existed
    assert fingerprint(keyed(plain)) == fingerprint({k: v for k, v in before.items()
                                                      if k not in DataConfig.UNKEYED})
    cut = DataConfig(sources=[LocalSource(paths=[str(tmp_path / "a.txt")], separator="\n\n")])
    assert fingerprint(keyed(cut)) != fingerprint(keyed(plain))


def test_a_double_quoted_override_is_a_toml_string_and_source_type_slips_are_named(tmp_path):
    """`--data.sources.0.separator='\\n\\n'` stayed a backslash and an n twice, and the file
    one document: in double quotes a value is read as TOML. A misspelled or missing source
    type blamed the next key ('paths'; did you mean 'part'?)."""
    from pretrain.run_config import load_config
    (tmp_path / "x.txt").write_text("a")
    src = tmp_path / "s.toml"
    src.write_text(f'[[data.sources]]\ntype = "local"\npaths = ["{tmp_path}/x.txt"]\n')
    cfg = load_config(str(src), [("data.sources.0.separator", '"\\n\\n"'),
                                 ("name", '"quoted"'), ("sample.prompts.0", "a\\nb")])
    assert cfg.data.sources[0].separator == "\n\n" and cfg.name == "quoted"
    assert load_config(None, [("model.arch", '"gpt2"')]).model.arch == "gpt2"   # a choice too
    assert cfg.sample.prompts[0] == "a\\nb"   # unquoted: as typed
    for body, message in (
            ('typ = "local"\npaths = ["x"]', r"data.sources.0.typ: unknown key; did you mean 'type'\?"),
            ('paths = ["x"]', r"data.sources.0: no type given \('python-installation' assumed\), "
                              r"and 'paths' is not one of its keys; it belongs to type 'local' or 'warc'"),
            ('type = "Local"\npaths = ["x"]', r"did you mean 'local'\?"),
            ('max_byte = 5', r"did you mean 'data.sources.0.max_bytes'\?")):   # a typo, no type
        src.write_text(f"[[data.sources]]\n{body}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(str(src))


def test_other_tools_names_for_a_key_are_answered_with_ours():
    """``learning_rate`` (Hugging Face's name) had no suggestion: too far from ``lr``."""
    from pretrain.model.config import ModelConfig
    from pretrain.train.config import TrainConfig
    for cls in (TrainConfig, ModelConfig):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(cls.ELSEWHERE.values()) <= fields and not set(cls.ELSEWHERE) & fields
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learning_rate'; did you "
                       r"mean 'train.lr'\?"):
        load_config(None, [("train.learning_rate", "1e-3")])
    with pytest.raises(ConfigError, match=r"'model.num_hidden_layers'; did you mean "
                       r"'model.n_layers'\?"):
        load_config(None, [("model.num_hidden_layers", "2")])
