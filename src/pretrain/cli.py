"""``pretrain`` command line: parse -> config -> stages. Nothing else lives here.

One command per stage of the registry (``stages.py``) plus ``run`` (all of them),
``export``, ``report``, ``verify``, ``plan``, ``sweep``, ``config show|validate`` and
``data inspect``. Every command that
reads a config takes ``-c/--config`` (a TOML file or a shipped config name; default
``quickstart``) and any number of dotted overrides ``--section.key=value``; there is no
flag that duplicates a config key. User errors (bad config, missing stage) print one
``error:`` line and exit with status 2; failed gates exit with 3; training stopped by
SIGTERM or SIGUSR1 writes a checkpoint and exits with 75 (rerun to resume; in another
stage, the stage stops as at Ctrl-C and the exit is 75 too); ``verify``
exits with 1 when a file differs from its record.

The commands that run stages import the pipeline (and with it torch) when they run, so
``config show``, ``--dry-run`` and ``--help`` stay instant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import hardware, stages
from .config import (
    EXIT_PREEMPTED,
    ConfigError,
    Preempted,
    PretrainError,
    SaidOnRankZero,
    parse_override_args,
    said_once,
    to_toml,
)
from .data.audit import inspect
from .eval.gates import check, load_results
from .log import rank, set_plain
from .planning import Options, dry_run_summary, plan
from .run_config import RunConfig, load_config, resolve_config_path, shipped_configs
from .rundir import MANIFEST, verify_files, verify_run

EPILOG = """\
overrides: any config value can be set with --section.key=value, e.g.
  --train.steps=200 --model.d_model=256 --data.sources.0.max_bytes=1000000
See `pretrain config show` for every key and its resolved value."""

_RAW = argparse.RawDescriptionHelpFormatter


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=None, metavar="CONFIG",
                   help="TOML config file, or the name of a shipped config (default: quickstart)")


def _stage_options(p: argparse.ArgumentParser, gate: bool, stage: str = "") -> None:
    _config_option(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and exit without running anything")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   choices=("all", *stages.names()),
                   help=f"rerun this stage ({stage} or all) even if it is up to date" if stage
                   else "rerun STAGE (and every stage after it) even if it is up to date")
    p.add_argument("--plain", action="store_true",
                   help="progress as plain lines (seconds elapsed), not a progress bar (what a "
                        "pipe or a log file gets anyway)")
    if gate:
        p.add_argument("--gate", action="store_true",
                       help="after evaluating, check eval.gates; exit with status 3 naming "
                            "every gate that failed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain", allow_abbrev=False,
        description="Raw text to an evaluated base language model: "
                    + " -> ".join(stages.names()) + ".",
        epilog=EPILOG, formatter_class=_RAW)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("run", allow_abbrev=False, epilog=EPILOG, formatter_class=_RAW,
                       help="run every stage in order, skipping those already up to date",
                       description=f"Run {', '.join(stages.names())} in order into "
                                   "runs/<name>/. Completed stages whose config and inputs are "
                                   "unchanged are skipped; the run ends with runs/<name>/report.md.")
    _stage_options(p, gate=True)
    for stage in stages.STAGES:
        p = sub.add_parser(stage.name, allow_abbrev=False, help=stage.help, epilog=EPILOG,
                           formatter_class=_RAW,
                           description=stage.help[0].upper() + stage.help[1:] + (
                               ". Needs the stages before it (" + ", ".join(
                                   stages.ancestors(stage.name)) + ") completed with the same "
                               "config in the same run directory." if stage.reads else "."))
        _stage_options(p, gate=stage.name == "eval", stage=stage.name)
    p = sub.add_parser("export", allow_abbrev=False, help="write a run's model in Hugging Face format",
                       description="Write the trained model of a run (runs/<name>, its train/ "
                                   "folder or a checkpoint folder) as a Hugging Face directory: "
                                   "model.safetensors, config.json, generation_config.json, "
                                   "tokenizer.json and tokenizer_config.json. LlamaForCausalLM "
                                   "for llama, DeepseekV3ForCausalLM for mla, GPT2LMHeadModel "
                                   "for gpt2.")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                   help="run directory, its train/ folder or a checkpoint folder")
    p.add_argument("out", metavar="OUT_DIR", help="folder to create")
    p = sub.add_parser("plan", allow_abbrev=False, epilog=EPILOG, formatter_class=_RAW,
                       help="size, memory, time, cost and the compute-optimal size of a run",
                       description="Plan the configured run before it runs: parameters and "
                                   "FLOPs, memory per device under the layouts the GPU count "
                                   "allows, time and cost, the compute-optimal frontier and "
                                   "predicted loss. With a budget, a model sized for it.")
    _config_option(p)
    for flag, meta, text in (
            ("--budget", "FLOPS", "plan for this much training compute (e.g. 1e21)"),
            ("--gpu-hours", "N", "... or for this many GPU-hours at the MFU"),
            ("--dollars", "N", "... or for this many dollars at the GPU's price"),
            ("--gpu", "NAME", "accelerator: " + ", ".join(hardware.ACCELERATORS) + ", or cpu "
             "(this machine, as a CPU run of the config measured it; default h100)"),
            ("--gpus", "N", "devices (default 1)"),
            ("--mfu", "F", "model FLOPs utilisation of the bf16 peak, as training logs it "
                           "(default: the run's measured one on a GPU, else 0.4 of the "
                           "configured precision's peak)"),
            ("--price", "DOLLARS", "per GPU-hour (default: the table's indicative price)"),
            ("--fit", "FIT_JSON", "a scaling-law fit (default: runs/<name>/sweep/fit.json)")):
        p.add_argument(flag, default=None, metavar=meta, help=text)
    p = sub.add_parser("sweep", allow_abbrev=False, epilog=EPILOG, formatter_class=_RAW,
                       help="fit a scaling law from a ladder of small runs on your data",
                       description="Train an isoFLOP ladder of small models of the config's "
                                   "family on its data and tokenizer (each an ordinary run "
                                   "under runs/<name>/sweep/), fit the optimal N and D per "
                                   "budget and the law L(N, D), write runs/<name>/sweep/"
                                   "fit.json and plots; `pretrain plan` then uses the fit.")
    _config_option(p)
    p.add_argument("--budgets", default="1e12,3e12,1e13", metavar="C,C,...",
                   help="training FLOPs of each rung (default 1e12,3e12,1e13)")
    p.add_argument("--sizes", default="4", metavar="N", help="models per budget (default 4)")
    p.add_argument("--predict", action="store_true",
                   help="then predict and train the law's optimal model for the next budget up")
    p.add_argument("--plain", action="store_true", help="progress as plain lines")
    p = sub.add_parser("report", allow_abbrev=False, help="write a run's report.md",
                       description="Write runs/<name>/report.md (and report/loss.png with "
                                   "matplotlib) from what the run's stages wrote: funnel, "
                                   "tokenizer, training, evaluation, gates, samples. "
                                   "`pretrain run` writes it at the end.")
    p.add_argument("run", metavar="RUN", help="run directory (runs/<name>)")
    p = sub.add_parser("verify", allow_abbrev=False,
                       help="re-hash a run's outputs and checkpoints against their records",
                       description="Re-hash every output file of every completed stage of RUN "
                                   "against the sha256 in its manifest, and every checkpoint "
                                   "against its checksums.json. Names each file that is "
                                   "missing, changed or unrecorded; exits 1 if any.")
    p.add_argument("run", metavar="RUN", help="run directory (runs/<name>)")
    p = sub.add_parser("config", allow_abbrev=False, help="show or validate configs",
                       description="Show the resolved config (defaults < TOML < overrides), "
                                   "or validate config files.", epilog=EPILOG, formatter_class=_RAW)
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = csub.add_parser("show", allow_abbrev=False, help="print the resolved config as TOML")
    _config_option(show)
    show.add_argument("name", nargs="?", default=None, metavar="CONFIG",
                      help="the same as -c CONFIG")
    val = csub.add_parser("validate", allow_abbrev=False, help="check config files, one line each")
    val.add_argument("configs", nargs="*", metavar="CONFIG",
                     help="files or names (default: every shipped config)")
    return parser


NO_GATES = "--gate: no gates configured (eval.gates = [\"all.bpb <= 1.9\", ...])"


def _moved_run_note(config: str | None, cfg: RunConfig,
                    overrides: list[tuple[str, str]]) -> None:
    """Say when ``config`` is a run directory's own config.toml naming another run
    directory: a moved (or copied) run's file keeps the absolute path it was written with,
    and the command quietly works on the old place."""
    if config is None or rank() != 0 or any(k == "runs_dir" for k, _ in overrides):
        return
    try:
        path = resolve_config_path(config)   # -c runs/x/config finds runs/x/config.toml
    except ConfigError:
        return
    here = path.parent.resolve()
    if path.name != "config.toml" or not any(here.glob(f"*/{MANIFEST}")) \
            or here == cfg.run_dir.resolve():
        return
    print(f"note: {path} is the config of the run directory {here}, but names "
          f"{cfg.run_dir} (the run was moved or copied?): working on {cfg.run_dir}; for "
          f"{here}, add --runs_dir={here.parent} --name={here.name}", file=sys.stderr)


def _run(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:   # alike on every rank: said once under torchrun; but a file
        try:                   # that only some machines have, by each rank without it
            resolve_config_path(args.config)
        except ConfigError:
            raise e from None
        raise said_once(e) from None
    if getattr(args, "gate", False) and not cfg.eval.gates:   # before the stages, not after
        raise PretrainError(NO_GATES)
    _moved_run_note(args.config, cfg, overrides)
    if args.dry_run:   # what the run would refuse, the dry run refuses too
        stages.check_force(set(args.force), stages.names() if args.command == "run"
                           else [args.command])
        print(to_toml(cfg, notes=True), end="")
        print("\n".join("# " + line for line in dry_run_summary(cfg).splitlines()))
        return 0
    set_plain(args.plain)
    # torch, for the commands that run stages only: `config show` and `--help` stay instant
    from .pipeline import run_stages
    from .report import write_report
    if args.command == "run":
        rd = run_stages(cfg, stages.names(), set(args.force))
    else:
        typed = ([f"-c {shlex.quote(args.config)}"] if args.config else []) + [
            shlex.quote(f"--{k}={v}") for k, v in overrides]
        rd = run_stages(cfg, [args.command], set(args.force), require_current_upstream=True,
                        args="".join(" " + t for t in typed))
    if rank() != 0:  # under torchrun, rank 0 reports
        return 0
    print(f"run directory: {rd.root}")
    if args.command == "run":
        print(f"report: {write_report(rd.root)}")
    if args.command in ("run", "sample"):
        m = rd.manifest("sample")
        for s in (m or {}).get("counts", {}).get("samples", []):
            print(f"--- sample: {s['prompt']!r}\n{s['prompt']}{s['completion']}")
    if args.command in ("run", "eval"):
        m = rd.manifest("eval")
        if m:
            print("eval: " + json.dumps(m["counts"]["all"]))
    gate = getattr(args, "gate", False)
    if gate or (args.command in ("run", "eval") and cfg.eval.gates and rd.manifest("eval")):
        return _gates(cfg, rd.stage_dir("eval"), rd.manifest("eval"), enforce=gate)
    return 0


def _gates(cfg: RunConfig, eval_dir: Path, manifest: dict | None, enforce: bool = True) -> int:
    """Check the gates against the eval stage's results, as it recorded them: a
    ``results.json`` edited since (the stage, up to date by its key, is not rerun) is
    refused, not gated. Without ``enforce`` (no ``--gate``) the outcome is only said."""
    if not cfg.eval.gates:
        raise PretrainError(NO_GATES)
    recorded = (manifest or {}).get("outputs", {})
    changed = verify_files(eval_dir, {k: v for k, v in recorded.items()
                                      if k in ("results.json", "harness.json")})
    if changed:
        message = (f"gates: the eval results changed after the eval stage wrote them "
                   f"({'; '.join(changed)}); rerun it (`--force eval`) or restore them")
        if enforce:
            raise PretrainError(message)
        print(f"warning: {message}", file=sys.stderr)
        return 0
    failed = check(cfg.eval.gates, load_results(eval_dir) or {})
    for f in failed:
        print(f"gate failed: {f}", file=sys.stderr)
    if failed and not enforce:
        print(f"gates: {len(failed)} of {len(cfg.eval.gates)} failed (the exit status is 3 "
              "only with --gate)", file=sys.stderr)
    if failed:
        return 3 if enforce else 0
    print(f"gates passed: {len(cfg.eval.gates)}")
    return 0


def _number(args: argparse.Namespace, name: str, kind: type = float) -> object:
    """The option's value if given: a finite number above 0 (``--mfu`` at most 1)."""
    raw = getattr(args, name)
    if raw is None:
        return None
    flag = f"--{name.replace('_', '-')}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{flag}: expected a number, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0) or (name == "mfu" and value > 1) \
            or (kind is int and not value.is_integer()):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{flag}: expected {what} above 0"
                          f"{' and at most 1' if name == 'mfu' else ''}, got {raw!r}")
    return kind(value)


def _plan(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    opts = Options(gpu=args.gpu or "h100", fit=args.fit or "")
    for name, kind in (("budget", float), ("gpu_hours", float), ("dollars", float),
                       ("gpus", int), ("mfu", float), ("price", float)):
        value = _number(args, name, kind)
        if value is not None:
            setattr(opts, name, value)
    print(plan(load_config(args.config, overrides), opts))
    return 0


def _sweep(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b]
        if not all(math.isfinite(b) and b > 0 for b in budgets):
            raise ValueError
    except ValueError:
        raise ConfigError("--budgets takes numbers above 0 separated by commas, got "
                          f"{args.budgets!r}") from None
    try:
        sizes = int(args.sizes)
    except ValueError:
        raise ConfigError(f"--sizes takes a whole number, got {args.sizes!r}") from None
    twice = sorted({b for b in budgets if budgets.count(b) > 1})
    if twice:   # its runs would count twice in the fit
        raise ConfigError(f"--budgets gives {', '.join(f'{b:g}' for b in twice)} more than once")
    set_plain(args.plain)
    from .sweep import run  # torch: it trains
    fit = run(load_config(args.config, overrides), budgets, sizes, args.predict)
    print(f"fit: {fit}")
    return 0


def _config(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    if args.action == "show":
        if args.config and args.name:
            raise ConfigError("config show: give the config once (-c CONFIG or CONFIG)")
        print(to_toml(load_config(args.config or args.name, overrides), notes=True), end="")
        return 0
    paths = args.configs or [str(p) for p in shipped_configs()]
    failed = 0
    for path in paths:
        try:
            path = str(resolve_config_path(path))   # a missing one is one line of the list
            cfg = load_config(path, overrides)
            missing = _missing_inputs(cfg)
            print(f"ok      {path}" + (f" (but on this machine: {'; '.join(missing)}; "
                                       "see the config's comments)" if missing else ""))
        except ConfigError as e:
            failed += 1
            print(f"invalid {path}: {str(e).removeprefix(f'{path}: ')}")
    return 1 if failed else 0


def _missing_inputs(cfg: RunConfig) -> list[str]:
    """The local files a valid config names but this machine lacks (paths resolve from
    the current directory): the config is fine, its data or train stage would stop."""
    return [f"data.sources.{i}: {why}" for i, src in enumerate(cfg.data.sources)
            if (why := src.unavailable())] + [why for why in [cfg.train.unavailable()] if why]


_OPTIONS = {"-c", "--config", "--dry-run", "--force", "--gate", "--plain", "-h", "--help",
            "--budget", "--gpu-hours", "--dollars", "--gpu", "--gpus", "--mfu", "--price",
            "--fit", "--budgets", "--sizes", "--predict"}


def _join_override_values(argv: list[str]) -> list[str]:
    """``--a.b 256`` -> ``--a.b=256``, so argparse never takes an override's value as CONFIG."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if (arg.startswith("--") and "=" not in arg and arg not in _OPTIONS
                and i + 1 < len(argv) and not argv[i + 1].startswith("--")
                and argv[i + 1] not in _OPTIONS):   # "--dryrun -c my.toml": not its value
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
    p.add_argument("-n", type=_positive, default=3, help="how many examples (default 3)")
    p.add_argument("--chars", type=_positive, default=600, help="characters of text per example")
    return p


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (-n 0 printed one example, -n -1 all but one)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not >= 1")
    return n


def _verify(run: Path) -> int:
    checked, problems = verify_run(run, tuple(stages.names()))
    for line in problems:
        print(line)
    many = "s" if len(problems) != 1 else ""
    print(f"verify: {checked} files checked in {run}: "
          + (f"{len(problems)} problem{many}" if problems else "all match their records"))
    return 1 if problems else 0


def _no_overrides(command: str, overrides: list[tuple[str, str]]) -> None:
    if overrides:
        raise PretrainError(f"{command} takes no config overrides")


def _printable_streams() -> None:
    """Text that the terminal's encoding cannot show (a Latin-1 or ASCII locale, a pipe under
    one) is printed escaped, not a UnicodeEncodeError halfway through a listing."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _one_process(command: str) -> None:
    """Under torchrun, commands that are not stages are refused (each rank ran them: a report
    written twice at once, every line printed once a rank), said by rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise said_once(PretrainError(
            f"`pretrain {command}` runs in one process, not under torchrun (only `pretrain "
            "train` runs there)"))


QUIET_EXIT_S = 5.0   # how long a rank that stops without a word waits for rank 0's line


@contextmanager
def _stop_notices() -> Iterator[list[str]]:
    """SIGTERM and SIGUSR1 (a scheduler's notice) stop a stage outside training as Ctrl-C
    does, and the command exits 75 as a preempted training does (it died with 143 and no
    word, so a scheduler that requeues on 75 did not requeue a job stopped in its data
    stage); the trainer answers them itself, with a checkpoint. Yields the signals heard."""
    heard: list[str] = []
    # under torchrun a SIGTERM is as often torchrun stopping the ranks after one failed:
    # not a preemption to be said, as the trainer's own handling of it is
    if threading.current_thread() is not threading.main_thread() or \
            int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield heard
        return

    def stop(signum: int, _frame: Any) -> None:
        heard.append(signal.Signals(signum).name)
        raise KeyboardInterrupt
    sigs = [getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n)]
    before = {sig: signal.signal(sig, stop) for sig in sigs}
    try:
        yield heard
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _printable_streams()
    try:
        if argv[:2] == ["data", "inspect"]:
            _one_process("data inspect")
            args = _inspect_parser().parse_args(argv[2:])
            print(inspect(Path(args.run), args.reason, args.n, args.chars))
            return 0
        # overrides (--key=value) go around argparse, which takes one with a space in its
        # value for a positional argument (CONFIG)
        joined = _join_override_values(argv)
        pulled = [a.startswith("--") and "=" in a and a.split("=", 1)[0] not in _OPTIONS
                  for a in joined]
        args, rest = build_parser().parse_known_args(
            [a for a, o in zip(joined, pulled, strict=True) if not o])
        try:
            overrides = parse_override_args(
                [a for a, o in zip(joined, pulled, strict=True) if o] + rest)
        except ConfigError as e:
            raise said_once(e) from None
        if args.command not in ("run", *stages.names()):   # not a stage: one process
            _one_process(args.command)
        if args.command == "config":
            return _config(args, overrides)
        if args.command == "plan":
            return _plan(args, overrides)
        if args.command == "report":
            _no_overrides("report", overrides)
            from .report import write_report  # the result tables import torch
            print(f"report: {write_report(Path(args.run))}")
            return 0
        if args.command == "verify":
            _no_overrides("verify", overrides)
            return _verify(Path(args.run))
        if args.command == "export":
            _no_overrides("export", overrides)
            from .export import export_run  # torch and transformers' formats
            print(f"exported: {export_run(Path(args.source), Path(args.out))}")
            return 0
        with _stop_notices() as notice:
            try:
                return (_sweep if args.command == "sweep" else _run)(args, overrides)
            except KeyboardInterrupt:
                if notice:   # not Ctrl-C: a scheduler's notice, which a requeue answers
                    hint = " without --force (with it, it starts over)" \
                        if getattr(args, "force", None) else ""
                    raise Preempted(f"{notice[0]} outside training: completed stages are "
                                    "kept, the interrupted one reruns with the same "
                                    f"command{hint}") from None
                raise
    except Preempted as e:
        # every rank stops at the step they agreed on, so rank 0's line speaks for all (each
        # rank printed the same line under torchrun)
        if rank() == 0:
            sys.stderr.write(f"preempted: {e}\n")  # one write: the ranks share stderr
            sys.stderr.flush()
        return EXIT_PREEMPTED
    except BrokenPipeError:   # `... | head`: the reader has what it wanted; say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # the exit's flush too
        return 141   # as a process killed by SIGPIPE
    except (PretrainError, OSError) as e:  # OSError: permissions, a full disk, a file for a folder
        if not isinstance(e, SaidOnRankZero):
            print(f"error: {e}", file=sys.stderr)
        else:   # rank 0 says it: exiting first, this rank had torchrun stop rank 0
            time.sleep(QUIET_EXIT_S)   # before its line was printed
        return 2
    except KeyboardInterrupt:
        runs_stages = bool(argv) and argv[0] in ("run", *stages.names()) \
            and argv[:2] != ["data", "inspect"]
        if rank() != 0:   # torchrun passes the Ctrl-C to every rank: rank 0 says it
            return 130
        forced = any(a == "--force" or a.startswith("--force=") for a in argv)
        print("interrupted; completed stages are kept, the interrupted one will rerun"
              + (" (rerun without --force to resume it; with --force it starts over)"
                 if forced else "") if runs_stages else "interrupted", file=sys.stderr)
        return 130
