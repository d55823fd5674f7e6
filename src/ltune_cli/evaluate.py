"""`ltune eval <run>`: rebuild a run from its folder, re-score it, and say whether it reproduces.

An override is taken only if eval honours it; anything else is refused, never silently
ignored. When the eval set is the stored one, every score of results.json "final" is
compared (`TOLERANCE`) and so is every prediction of predictions.json; a mismatch is
recorded in eval.json and the CLI exits with `EXIT_MISMATCH`.

Writes `eval.json` and `eval_predictions.json` (same layout as predictions.json) into the
run folder, or into `--out <folder>` so that several evals of one run sit side by side.
"""

from __future__ import annotations

from pathlib import Path

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError, suggest

#: Exit code of `ltune eval` when the run ran but does not reproduce its stored scores
#: (2 stays "bad input", 1 "a bug").
EXIT_MISMATCH = 3

#: Overrides eval honours -> the dataset kinds that read them (None: every run).
DATA_KEYS = {"dataset.eval_limit": None, "dataset.eval_path": ("files",), "dataset.eval_split": ("hub",)}
#: Where and how the frozen base runs; they can change float rounding, never which weights are scored.
RUNTIME_KEYS = ("model.path", "hardware.device", "hardware.dtype", "hardware.eval_batch_size",
                "hardware.num_threads", "hardware.load_in", "hardware.device_map", "hardware.offload_folder")
EVAL_KEYS = (*DATA_KEYS, *RUNTIME_KEYS)

#: |stored - now| allowed per score. Classification scores are ratios of counts, so any real
#: difference is at least one flipped example (>= 1/N): they must agree to float repr.
#: val_loss is a float mean; its noise floor across eval_batch_size (padding) and thread
#: counts measured on the tiny test models is < 1e-6 (tests/test_eval.py).
TOLERANCE = {"accuracy": 1e-9, "mcc": 1e-9, "macro_f1": 1e-9, "pair_accuracy": 1e-9, "val_loss": 1e-5}
PREDICTIONS_FILE = "eval_predictions.json"


def _check_override(o: str, cfg, allowed=EVAL_KEYS, command: str = "eval") -> str:
    """The key of one `key=value` override `command` honours for this run, else a one-line error."""
    from omegaconf import OmegaConf

    kind, dataset = str(cfg.dataset.kind), str(cfg.dataset.name)
    if "=" not in o:
        raise LtuneError(f"{command} override '{o}' is not key=value; {command} takes {', '.join(allowed)}.")
    key = o.split("=", 1)[0]
    if key not in allowed:
        known = OmegaConf.select(cfg, key, default="<missing>") != "<missing>"  # a real key: no typo to fix
        verb = "re-scores" if command == "eval" else "loads"
        raise LtuneError(f"{command} override '{o}' is not honoured: {command} {verb} the run with its stored config "
                         f"and takes only {', '.join(allowed)}.{'' if known else suggest(key, allowed)}")
    kinds = DATA_KEYS.get(key)
    if kinds is not None and kind not in kinds:
        raise LtuneError(f"eval override '{o}' is not honoured: this run's dataset '{dataset}' is "
                         f"dataset.kind={kind}, and {key} is read only by dataset.kind={'/'.join(kinds)} runs.")
    return key


def load_run_config(run: Path, overrides=(), allowed=EVAL_KEYS, command: str = "eval"):
    """The run's resolved config with the overrides `command` honours (`allowed`) applied, and its
    results.json. predict and export take the RUNTIME_KEYS only (they read no eval set)."""
    from omegaconf import OmegaConf

    from ltune_cli.config import check, load_stored

    run = Path(run)
    if not run.is_dir():
        raise LtuneError(f"{run}: no such run folder.")
    missing = [f for f in ("config.yaml", "results.json", "trainable.safetensors") if not (run / f).is_file()]
    if missing:
        raise LtuneError(f"{run} is not a finished run folder: missing {', '.join(missing)}.")
    res = runfolder.read_results(run)
    if res.get("schema") != runfolder.SCHEMA:
        raise LtuneError(f"{run}/results.json has schema {res.get('schema')!r}; this ltune reads "
                         f"{runfolder.SCHEMA!r} (run folder from another version).")
    cfg = load_stored(run / "config.yaml")
    for o in overrides:
        _check_override(o, cfg, allowed, command)
    if overrides:
        from ltune_cli.config import translate_config_error

        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:  # noqa: BLE001
            raise translate_config_error(e) from None
    check(cfg)
    return cfg, res


def _stored_predictions(run: Path) -> list[int] | None:
    import json

    path = run / "predictions.json"
    if not path.is_file():
        return None
    try:
        pred = json.loads(path.read_text(encoding="utf-8")).get("pred")
    except (json.JSONDecodeError, AttributeError):
        raise LtuneError(f"{path} is not a predictions file ({{'gold', 'pred', 'label_texts'}}); "
                         "it was damaged after training.") from None
    return pred if isinstance(pred, list) else None


def reproduction(stored: dict, scores: dict, stored_pred: list | None, pred: list) -> tuple[bool, list[dict]]:
    """(reproduces, mismatches): every stored score within TOLERANCE, every prediction equal."""
    mismatches = []
    for k, want in stored.items():
        if k == "step" or not isinstance(want, (int, float)):
            continue
        got = scores.get(k)
        tol = TOLERANCE.get(k, 1e-9)
        if got is None or not abs(got - want) <= tol:
            mismatches.append({"score": k, "stored": want, "now": got, "tolerance": tol})
    if stored_pred is not None:
        differ = sum(a != b for a, b in zip(stored_pred, pred, strict=False)) + abs(len(stored_pred) - len(pred))
        if differ:
            mismatches.append({"score": "predictions", "stored": "predictions.json", "now": f"{differ} differ",
                               "tolerance": 0})
    return not mismatches, mismatches


def score_run(run, overrides=(), *, backbone=None, on_batch=None) -> tuple[dict, dict]:
    """Re-score a run: (eval record for eval.json, predictions record). Writes nothing.
    on_batch(done, total): progress after each eval batch (engine.evaluate)."""
    from ltune_cli import engine

    run = Path(run)
    overrides = list(overrides)
    cfg, res = load_run_config(run, overrides)
    from ltune_cli.config import load_stored

    stored_dataset = load_stored(run / "config.yaml").dataset
    s = engine.build(cfg, backbone=backbone, with_train=False)
    runfolder.load_trainable(s.method, run)
    scores, preds = engine.evaluate(s, on_batch=on_batch)
    out = {"run": str(run), "eval_examples": len(s.eval_enc), "scores": scores,
           "versions": runfolder.versions(), "overrides": overrides, "tolerance": TOLERANCE}
    final = res.get("final") or {}
    same_set = stored_dataset == cfg.dataset and res.get("eval_examples") == len(s.eval_enc)
    if not final:
        out["reproduces"], out["compared"] = None, "results.json has no final scores"
    elif not same_set:
        changed = [o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0] in DATA_KEYS]
        out["reproduces"] = None
        out["compared"] = (f"not compared: the eval set differs from training's "
                           f"({', '.join(changed) or 'eval_examples'} changed)")
    else:
        ok, mismatches = reproduction(final, scores, _stored_predictions(run), preds.tolist())
        out.update(stored_final=final, reproduces=ok, mismatches=mismatches,
                   compared="every score of results.json final and every prediction of predictions.json")
    pred_rec = {"gold": s.eval_enc.labels, "pred": preds, "label_texts": s.data.label_texts}
    return out, pred_rec


def out_folder(run, out=None) -> Path:
    """Where eval writes: the run folder, or a fresh --out folder (an earlier eval is never replaced)."""
    if out is None:
        return Path(run)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LtuneError(f"eval --out {out}: is a file; give a folder.")
    if (out / "eval.json").exists():
        raise LtuneError(f"eval --out {out} already holds an eval.json; choose another folder (or delete it).")
    return out


def write_eval(folder: Path, out: dict, pred_rec: dict) -> tuple[Path, Path]:
    """eval.json and eval_predictions.json into `folder`; an unwritable folder is a user error."""
    folder = Path(folder)
    paths = folder / "eval.json", folder / PREDICTIONS_FILE
    out = {**out, "predictions": str(paths[1])}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        runfolder.write_json(paths[1], pred_rec)
        runfolder.write_json(paths[0], out)
    except OSError as e:
        raise LtuneError(f"could not write the eval to {folder} ({e.strerror or e}); the scores printed above "
                         f"were not saved: rerun with --out <a writable folder>.") from None
    return paths


def evaluate_run(run, overrides=(), *, backbone=None, out=None) -> dict:
    """Re-score `run` and write eval.json + eval_predictions.json (into `out` if given)."""
    folder = out_folder(run, out)
    result, pred_rec = score_run(run, overrides, backbone=backbone)
    write_eval(folder, result, pred_rec)
    return result
