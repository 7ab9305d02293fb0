"""The columns that batch scoring (``router-ml score``, :mod:`router_ml.serve.batch`) and Spark
(:mod:`router_ml.serve.spark`) add to a table of prompts, for a router of any number of models.
"""

from __future__ import annotations

QUALITY_PREFIX = "quality:"


def output_columns(router) -> list[str]:
    """The columns scoring adds: ``model``, ``score`` (two-model routers only) and
    ``quality:<model>`` per candidate, in ``router.models`` order."""
    return (["model"] + (["score"] if len(router.models) == 2 else [])
            + [f"{QUALITY_PREFIX}{m}" for m in router.models])


def decision_columns(router, prompts) -> dict:
    """{column of :func:`output_columns`: (n,) array} for the prompts: the chosen model's name
    (str), the pair's score and each candidate's predicted quality (float64 in [0, 1])."""
    r = router.route_arrays(prompts)
    out = {"model": r.model}
    if len(router.models) == 2:
        out["score"] = r.score
    out.update({f"{QUALITY_PREFIX}{m}": r.qualities[:, j] for j, m in enumerate(router.models)})
    return out


__all__ = ["QUALITY_PREFIX", "decision_columns", "output_columns"]
