"""`ltune eval <run>`: rebuild a run from its folder and re-score it."""

from __future__ import annotations

from pathlib import Path

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError

EVAL_OVERRIDABLE = ("dataset.eval_limit", "dataset.eval_path", "hardware.", "model.path")


def load_run_config(run: Path, overrides=()):
    """The run's resolved config, with the few overrides that make sense at eval time."""
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
        key = o.split("=", 1)[0]
        if "=" not in o or not any(key == p or (p.endswith(".") and key.startswith(p)) for p in EVAL_OVERRIDABLE):
            raise LtuneError(f"eval override '{o}' is not allowed; eval takes {', '.join(EVAL_OVERRIDABLE)}* "
                             f"as key=value.")
    if overrides:
        from ltune_cli.config import translate_config_error

        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:  # noqa: BLE001
            raise translate_config_error(e) from None
    check(cfg)
    return cfg, res


def evaluate_run(run, overrides=(), *, backbone=None) -> dict:
    from ltune_cli import engine

    run = Path(run)
    cfg, res = load_run_config(run, overrides)
    s = engine.build(cfg, backbone=backbone, with_train=False)
    runfolder.load_trainable(s.method, run)
    scores, _ = engine.evaluate(s)
    out = {"run": str(run), "eval_examples": len(s.eval_enc), "scores": scores,
           "versions": runfolder.versions(), "overrides": list(overrides)}
    final = res.get("final") or {}
    if res.get("eval_examples") == len(s.eval_enc) and final:
        out["stored_final"] = final
        out["reproduces"] = all(abs(final[k] - scores[k]) <= 1e-6 for k in ("accuracy", "mcc", "macro_f1")
                                if k in final)
    try:
        runfolder.write_json(run / "eval.json", out)
    except OSError as e:  # a read-only run folder: the scores are still printed (cli.eval_)
        out["not_written"] = f"{run / 'eval.json'} could not be written ({runfolder.os_reason(e)})"
    return out
