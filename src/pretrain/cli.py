"""``pretrain`` command line: parse -> config -> stage function. Nothing else lives here.

Every command takes ``-c/--config`` (a TOML file or a shipped config name; default
``quickstart``) and any number of dotted overrides ``--section.key=value``.
User errors (bad config, missing stage) print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .config import ConfigError, PretrainError, parse_override_args, to_toml

STAGE_HELP = {
    "data": "read sources, filter, deduplicate, decontaminate; write documents and an audit "
            "trail (`pretrain data inspect RUN` shows it)",
    "tokenizer": "train a byte-level BPE tokenizer on a sample of the cleaned documents",
    "tokenize": "encode the documents into memory-mapped train/val token shards",
    "train": "train the model on the token shards (AdamW, warmup + cosine)",
    "eval": "held-out loss, perplexity and bits-per-byte, overall and per domain",
    "sample": "generate text from the trained model for the configured prompts",
}

EPILOG = """\
overrides: any config value can be set with --section.key=value, e.g.
  --train.steps=200 --model.d_model=256 --data.sources.0.max_bytes=1000000
See `pretrain config show` for every key and its resolved value."""


def _common(p: argparse.ArgumentParser, stages: bool = True, stage: str = "") -> None:
    p.add_argument("-c", "--config", default=None, metavar="CONFIG",
                   help="TOML config file, or the name of a shipped config (default: quickstart)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and exit without running anything")
    if stages:
        p.add_argument("--resume", action="store_true",
                       help="continue training from the latest checkpoint of the same config "
                            "(the default; --train.resume=false starts over)")
        if stage in ("eval",):
            p.add_argument("--harness", default="", metavar="TASKS",
                           help="also run lm-evaluation-harness tasks (comma-separated names; "
                                "eval.harness_include adds local task YAMLs) on the trained "
                                "model; results in runs/<name>/harness.json")
        p.add_argument("--gate", action="store_true",
                       help="after evaluating, check eval.gates; exit with status 3 naming "
                            "every gate that failed")
        p.add_argument("--force", action="append", default=[], metavar="STAGE",
                       choices=("all", *STAGE_HELP),
                       help="rerun STAGE (and every stage after it) even if it is up to date")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain", allow_abbrev=False,
        description="Raw text to an evaluated base language model: data -> tokenizer -> "
                    "token shards -> training -> evaluation -> samples.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("run", allow_abbrev=False, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="run every stage in order, skipping those already up to date",
                       description="Run data, tokenizer, tokenize, train, eval and sample in "
                                   "order into runs/<name>/. Completed stages whose config and "
                                   "inputs are unchanged are skipped.")
    _common(p)
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, allow_abbrev=False, help=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=text[0].upper() + text[1:] + ". Needs the stages "
                           "before it to have completed in the same run directory.")
        _common(p, stage=stage)
    p = sub.add_parser("export", allow_abbrev=False, help="write a run's model in Hugging Face format",
                       description="Write the trained model of a run (runs/<name> or its train/ "
                                   "folder) as a Hugging Face directory: model.safetensors, "
                                   "config.json, generation_config.json, tokenizer.json and "
                                   "tokenizer_config.json. LlamaForCausalLM for llama, "
                                   "DeepseekV3ForCausalLM for mla, GPT2LMHeadModel for gpt2.")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run directory or its train/ folder")
    p.add_argument("out", metavar="OUT_DIR", help="folder to create")
    p = sub.add_parser("report", allow_abbrev=False, help="write a run's report.md",
                       description="Write runs/<name>/report.md (and report/loss.png with "
                                   "matplotlib) from what the run's stages wrote: funnel, "
                                   "tokenizer, training, evaluation, gates, samples. "
                                   "`pretrain run` writes it at the end.")
    p.add_argument("run", metavar="RUN", help="run directory (runs/<name>)")
    p = sub.add_parser("config", allow_abbrev=False, help="show or validate configs",
                       description="Show the resolved config (defaults < TOML < overrides), "
                                   "or validate config files.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = csub.add_parser("show", allow_abbrev=False, help="print the resolved config as TOML")
    show.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                      help="TOML file or shipped config name (default: quickstart)")
    val = csub.add_parser("validate", allow_abbrev=False, help="check config files, one line each")
    val.add_argument("configs", nargs="*", metavar="CONFIG",
                     help="files or names (default: every shipped config)")
    return parser


def _run(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    from .run_config import load_config
    if args.resume:
        overrides = [*overrides, ("train.resume", "true")]
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        print(to_toml(cfg), end="")
        return 0
    from .pipeline import STAGES, run_stages
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if args.command != "train":
            raise PretrainError("under torchrun only `pretrain train` runs (data parallel); run "
                                "the stages before it in one process first")
        from . import distributed
        from .train.loop import resolve_device
        distributed.init(resolve_device(cfg.train.device).type)
    if args.command == "run":
        rd = run_stages(cfg, STAGES, set(args.force))
    else:
        rd = run_stages(cfg, (args.command,), set(args.force), require_current_upstream=True)
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
    print(f"run directory: {rd.root}")
    if args.command == "run":
        from .report import write
        print(f"report: {write(rd.root)}")
    if args.command in ("run", "sample"):
        m = rd.manifest("sample")
        for s in (m or {}).get("counts", {}).get("samples", []):
            print(f"--- sample: {s['prompt']!r}\n{s['prompt']}{s['completion']}")
    if args.command in ("run", "eval"):
        m = rd.manifest("eval")
        if m:
            print("eval: " + json.dumps({k: v for k, v in m["counts"]["all"].items()}))
    if getattr(args, "harness", ""):
        from .eval import harness
        from .pipeline import load_trained
        model, tok, device = load_trained(cfg, rd.stage_dir("train"), rd.stage_dir("tokenizer"))
        res = harness.run(model, tok, [t for t in args.harness.split(",") if t], device,
                          cfg.eval.task_limit, cfg.eval.harness_include, cfg.eval.num_fewshot,
                          cfg.eval.batch_size)
        (rd.root / "harness.json").write_text(json.dumps(res, indent=2) + "\n")
        for name, metrics in res.items():
            print(f"harness: {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                    if isinstance(v, float)))
    if getattr(args, "gate", False):
        from .eval.gates import check
        if not cfg.eval.gates:
            raise PretrainError("--gate: no gates configured (eval.gates = [\"all.bpb <= 1.9\", ...])")
        results = json.loads((rd.stage_dir("eval") / "results.json").read_text()) \
            if rd.manifest("eval") else {}
        failed = check(cfg.eval.gates, results)
        for f in failed:
            print(f"gate failed: {f}", file=sys.stderr)
        if failed:
            return 3
        print(f"gates passed: {len(cfg.eval.gates)}")
    return 0


def _config(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    from .run_config import load_config, resolve_config_path, shipped_configs
    if args.action == "show":
        print(to_toml(load_config(args.config, overrides)), end="")
        return 0
    paths = [str(resolve_config_path(c)) for c in args.configs] or [str(p) for p in shipped_configs()]
    failed = 0
    for path in paths:
        try:
            load_config(path, overrides)
            print(f"ok      {path}")
        except ConfigError as e:
            failed += 1
            print(f"invalid {path}: {e}")
    return 1 if failed else 0


_OPTIONS = {"-c", "--config", "--dry-run", "--force", "--resume", "--gate", "--harness", "-h",
            "--help"}


def _join_override_values(argv: list[str]) -> list[str]:
    """``--a.b 256`` -> ``--a.b=256``, so argparse never takes an override's value as CONFIG."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if (arg.startswith("--") and "=" not in arg and arg not in _OPTIONS
                and i + 1 < len(argv) and not argv[i + 1].startswith("--")):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pretrain data inspect", allow_abbrev=False,
        description="Print the data stage's funnel (documents and bytes in and out of every "
                    "step, drops by reason) and examples of dropped documents.")
    p.add_argument("run", metavar="RUN", help="run directory (runs/<name>) or its data/ folder")
    p.add_argument("--reason", default="", help="show dropped documents with this reason")
    p.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    p.add_argument("--chars", type=int, default=600, help="characters of text per example")
    return p


def _inspect(argv: list[str]) -> int:
    from pathlib import Path

    from .data.audit import inspect
    args = _inspect_parser().parse_args(argv)
    print(inspect(Path(args.run), args.reason, args.n, args.chars))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["data", "inspect"]:
        try:
            return _inspect(argv[2:])
        except PretrainError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, rest = parser.parse_known_args(_join_override_values(argv))
    try:
        overrides = parse_override_args(rest)
        if args.command == "config":
            return _config(args, overrides)
        if args.command == "report":
            if overrides:
                raise PretrainError("report takes no config overrides")
            from pathlib import Path

            from .report import write
            print(f"report: {write(Path(args.run))}")
            return 0
        if args.command == "export":
            if overrides:
                raise PretrainError("export takes no config overrides")
            from pathlib import Path

            from .model.hf import export_run
            print(f"exported: {export_run(Path(args.source), Path(args.out))}")
            return 0
        return _run(args, overrides)
    except PretrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, a file where a folder should be, a full disk
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed stages are kept, the interrupted one will rerun",
              file=sys.stderr)
        return 130
