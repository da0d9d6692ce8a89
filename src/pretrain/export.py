"""``pretrain export``: a trained run (model and tokenizer) as a Hugging Face directory.

The model side is ``model/hf.py``, the tokenizer side ``tokenizer/hf.py``; this module is
the one place that knows a run has both, so neither package knows the other.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import ConfigError, PretrainError
from .log import log0
from .model import hf as model_hf
from .model import io
from .rundir import CHECKSUMS, changed_upstream, read_manifest, verify_folder, write_failure
from .tokenizer import hf as tok_hf
from .tokenizer.files import load_tokenizer, run_tokenizer


def _check_trained_on(folder: Path) -> None:
    """A run's ``train/`` folder: refuse when its token shards were rewritten since it was
    trained (``tokenize`` rerun, with another tokenizer perhaps): the tokenizer exported
    beside the model would not be the one it learned."""
    run = folder.resolve().parent
    if read_manifest(run / "tokenize") is None:
        return
    if "tokenize" in changed_upstream(read_manifest(folder), lambda u: read_manifest(run / u)):
        raise PretrainError(f"export: {run / 'tokenize'} was rewritten after "
                            f"{folder} was trained (the train stage is out of date): its "
                            "tokenizer is not the model's; rerun the stages (`pretrain run` "
                            "with that config) or export a checkpoint of the new training")


_TMP_IN = ".pretrain-export-tmp"   # inside an empty OUT folder, while it is written


def export_run(source: Path, out: Path) -> Path:
    """A run directory, its ``train/`` folder or a checkpoint folder -> an HF directory.

    Writes the model files and, when the run has one, the tokenizer (``tokenizer.json`` +
    ``tokenizer_config.json``), so ``AutoModelForCausalLM`` and ``AutoTokenizer`` both load it.
    """
    out = Path(os.path.abspath(out))   # "." has no name to put a temporary one beside
    # an empty folder made for it (a mount point, a link to one, "."): filled in place,
    # from a temporary folder inside it (same file system, and the folder itself kept)
    into = out.is_dir() and all(p.name == _TMP_IN for p in out.iterdir())
    if out.exists() and not into:
        raise ConfigError(f"{out} exists and is not an empty folder; remove it or choose "
                          "another folder")
    folder = io.model_folder(source)
    if folder is None:
        raise ConfigError(f"{source}: neither a run directory with a completed train stage, "
                          f"a checkpoint folder (step-N), nor a folder with {io.WEIGHTS} and "
                          f"{io.CONFIG}{io.checkpoint_hint(source)}")
    tok_path = run_tokenizer(folder)
    _check_trained_on(folder)
    if (folder / ".metadata").is_file() and not (folder / CHECKSUMS).is_file():
        log0(f"export: note: {folder} has no {CHECKSUMS}: its files are exported unverified")
    for written in [folder] + ([tok_path.parent] if tok_path else []):
        damaged = verify_folder(written)
        if damaged:
            raise PretrainError(f"export: {written} does not match what was recorded when it "
                                f"was written: {'; '.join(damaged[:3])}; nothing was exported")
    model = io.load(folder)
    tok = load_tokenizer(tok_path) if tok_path else None
    # a name of ours (``OUT.tmp`` could be the user's folder): a killed export's leftover is
    # cleared by the next export to the same folder
    tmp = out / _TMP_IN if into else out.with_name(f".{out.name}.pretrain-export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model_hf.export(model, tmp, tok.bos_id if tok else None, tok.eos_id if tok else None,
                        tok_hf.pad_id(tok) if tok else None)
        if tok is not None:
            tok_hf.save_pretrained(tok, tmp, model.cfg.seq_len)
        if into:
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
            tmp.rmdir()
        else:
            tmp.rename(out)
    except ValueError as e:   # what the HF format cannot express (model or tokenizer)
        shutil.rmtree(tmp, ignore_errors=True)
        raise PretrainError(f"export: {e}; nothing was left at {out}") from e
    except Exception as e:   # noqa: BLE001 -- safetensors raises its own type for a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        if out.exists() and not into:   # the rename found it: made meanwhile, by another export
            raise PretrainError(f"export: {out} appeared while this export ran (another "
                                "export to the same folder?); it was left as it is") from e
        raise PretrainError(f"export: {write_failure(out, e)}; nothing was left at {out}") from e
    return out

