"""Zero-shot retrieval on every test set of a config, as one evaluation for the engine: the per-epoch
validation of video-text training (``r_mean`` picks the best checkpoint) and ``--eval``."""
from __future__ import annotations

from ...engine.task import log
from .retrieval import evaluate_retrieval, summary_line


def evaluate_sets(model, loaders, device, amp: str = "none", progress: bool = True, *, sets: dict, tokenizer,
                  cfg, select: str | None = None) -> dict:
    """Retrieval on every test set; flat scalars ``{set}_{itm|itc}_{metric}`` plus ``r_mean`` of the
    selected set's re-ranked results (what picks the best checkpoint). ``results`` holds the nested dicts."""
    e = cfg.get("eval") or {}
    out, results = {}, {}
    for name, s in sets.items():
        res = evaluate_retrieval(model, loaders[name], s["corpus"], tokenizer, device, s["max_len"],
                                 int(e.get("k_test", 128)), amp, int(e.get("itm_batch", 32)),
                                 int(cfg.data.get("text_batch_size", 256)), progress=progress)
        results[name] = res
        log(summary_line(name, res))
        for kind in ("itm", "itc"):
            out.update({f"{name}_{kind}_{k}": v for k, v in res[kind].items()})
    select = select or next(iter(sets))
    out["r_mean"] = results[select]["itm"]["r_mean"]
    out["results"] = results
    return out
