"""Where a CPU search's time goes: every llama.cpp decoding call of an `ets run`, timed.

Runs `ets run` in this process with the policy engine's decoding call wrapped, then prints
the share of the search's time (stats.log's) spent inside decoding calls, and a least-squares fit of a
call's time as a fixed part plus a part per batch row, separately for calls that want
logits for every row (decoding: each row a sequence extended by one token) and for prompt
evaluations (one logit, the other rows only fill the cache).

    .venv/bin/python bench/decode_calls.py --problems 8 --config configs/cpu_ets_qwen.yaml

Arguments after ``--`` go to `ets run` as they are (e.g. ``-- --width 16``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from ets.backends.llamacpp import engine  # noqa: E402
from ets.cli import main as ets_main  # noqa: E402
from ets.evaluate.report import read_stats_log  # noqa: E402


def fit(calls: np.ndarray) -> tuple[float, float]:
    """(fixed ms, ms a row) of ``calls`` rows (rows, seconds), by least squares."""
    design = np.c_[np.ones(len(calls)), calls[:, 0]]
    (fixed, per_row), *_ = np.linalg.lstsq(design, calls[:, 1] * 1000, rcond=None)
    return float(fixed), float(per_row)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="asdiv[0::20]")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets_qwen.yaml"))
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    log: list[tuple[int, int, float]] = []  # (rows, rows wanting logits, seconds) a call
    decode = engine.SlotEngine._decode

    def timed(self, items):
        start = time.perf_counter()
        decode(self, items)
        log.append((len(items), sum(1 for item in items if item[3]), time.perf_counter() - start))

    engine.SlotEngine._decode = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            code = ets_main(["run", "--input_path", args.dataset, "--num_samples", str(args.problems),
                             "--config", args.config, "--output_path", str(Path(out) / "answers.json"), "--quiet",
                             *extra])
            search_s = read_stats_log(Path(out) / "stats.log")["time"] if code == 0 else 0.0
    finally:
        engine.SlotEngine._decode = decode
    if code != 0 or not log:
        raise SystemExit(f"ets run failed (exit {code}) or decoded nothing")

    calls = np.array([(rows, seconds) for rows, _, seconds in log])
    every_row = np.array([wants == rows for rows, wants, _ in log])
    result = {"search_s": search_s, "calls": len(log), "in_decoding_s": float(calls[:, 1].sum())}
    print(f"{args.problems} problems of {args.dataset}; config {args.config}{' ' + ' '.join(extra) if extra else ''}")
    print(f"the search took {search_s:.1f} s (stats.log's time; model loading not counted), {len(log)} decoding "
          f"calls, {result['in_decoding_s']:.1f} s inside them ({100 * result['in_decoding_s'] / search_s:.0f} %)")
    for name, mask in (("decoding (logits for every row)", every_row), ("prompt evaluation", ~every_row)):
        part = calls[mask]
        if len(part) < 2:
            continue
        fixed, per_row = fit(part)
        result[name] = {"calls": len(part), "rows": int(part[:, 0].sum()), "seconds": float(part[:, 1].sum()),
                        "fixed_ms": fixed, "ms_a_row": per_row}
        print(f"{name}: {len(part)} calls, {int(part[:, 0].sum())} rows, {part[:, 1].sum():.1f} s; "
              f"a call ~ {fixed:.1f} ms + {per_row:.1f} ms a row")
    return result


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
