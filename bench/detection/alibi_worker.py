"""alibi-detect's KSDrift / ChiSquareDrift over one stream's daily batches, in the bench venv.

Run by ``bench.detection.peers.AlibiWorker`` with the interpreter of ``.venv-bench`` (which
has alibi-detect and its numpy < 2; the project's venv cannot). It imports nothing from the
project. Protocol: one JSON request per line on stdin,

    {"npz": path, "reference_days": 30, "days": D, "numeric": [names], "categorical": [names]}

where the npz holds ``n{i}_{d}`` / ``c{i}_{d}``: feature i's values (missing dropped;
categorical as integer codes) on day d. One JSON reply per line on stdout: per feature the
p-value of each day from ``reference_days`` on (``null`` for a day without values), from a
univariate detector whose reference is days 0 .. reference_days - 1, with the default
correction (a univariate detector's Bonferroni divides by one; the caller applies
``p_val / n_features`` across a detector's features, as a multi-column detector would).

A request with ``"kind": "multivariate"`` (:func:`_multivariate`) holds ``ref`` (the reference
sample, rows x features) and ``d{i}`` (tested day i's sample; absent for a day without one) in
its npz, and ``days``, ``detectors`` (``"MMD"``, ``"LSDD"``), ``p_val``, ``permutations`` and
``seed``; the reply has per detector the p-value of each tested day (``null`` where absent).
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from typing import Any


def main() -> None:
    warnings.simplefilter("ignore")
    np = importlib.import_module("numpy")
    cd = importlib.import_module("alibi_detect.cd")
    version = importlib.import_module("alibi_detect").__version__
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply: dict[str, Any] = {"version": version}
            req = json.loads(line)
            if req.get("kind") == "multivariate":
                reply.update(_multivariate(np, cd, req))
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
                continue
            ref_days, days = int(req["reference_days"]), int(req["days"])
            with np.load(req["npz"]) as data:
                for kind, prefix, cls in (
                    ("numeric", "n", cd.KSDrift),
                    ("categorical", "c", cd.ChiSquareDrift),
                ):
                    out: dict[str, list[float | None]] = {}
                    for i, name in enumerate(req[kind]):
                        per_day = [data[f"{prefix}{i}_{d}"] for d in range(days)]
                        ref = np.concatenate(per_day[:ref_days]).reshape(-1, 1)
                        det = cls(ref, p_val=0.01)
                        ps: list[float | None] = []
                        for x in per_day[ref_days:]:
                            if x.size == 0:
                                ps.append(None)
                                continue
                            pred = det.predict(x.reshape(-1, 1), return_p_val=True)
                            ps.append(float(pred["data"]["p_val"][0]))
                        out[name] = ps
                    reply[kind] = out
        except Exception as exc:  # reported to the caller, which stops the benchmark
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _multivariate(np: Any, cd: Any, req: dict[str, Any]) -> dict[str, Any]:
    """MMDDrift and LSDDDrift, PyTorch backend on the CPU, one thread, their defaults but
    ``p_val`` and ``n_permutations``: a Gaussian RBF kernel whose bandwidth is the reference's
    median distance (MMD), and ``n_kernel_centers`` = a 20th of the reference (LSDD). Each
    detector's permutations are seeded with ``seed`` (``torch.manual_seed``) before its first
    day, so a stream gets the same p-values on every run."""
    torch = importlib.import_module("torch")
    torch.set_num_threads(1)  # the benchmark runs one job per core
    classes = {"MMD": cd.MMDDrift, "LSDD": cd.LSDDDrift}
    out: dict[str, list[float | None]] = {}
    with np.load(req["npz"]) as data:
        ref = data["ref"]
        samples = [data.get(f"d{i}") for i in range(int(req["days"]))]
    for name in req["detectors"]:
        torch.manual_seed(int(req["seed"]))
        det = classes[name](
            ref,
            backend="pytorch",
            p_val=float(req["p_val"]),
            n_permutations=int(req["permutations"]),
            device="cpu",
        )
        ps: list[float | None] = []
        for x in samples:
            if x is None:
                ps.append(None)
                continue
            ps.append(float(det.predict(x, return_p_val=True)["data"]["p_val"]))
        out[name] = ps
    return {"pvalues": out, "backend": f"pytorch {torch.__version__}"}


if __name__ == "__main__":
    main()
