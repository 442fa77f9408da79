"""The CPU policy's token sampler against the full-vocabulary inverse CDF it replaced, side by side.

Both draw one token from ``softmax(logits / temperature)`` with one uniform number. ``full vocabulary``
is the sampler as it was: float64 exponentials and one running sum over every vocabulary entry.
``two-level`` is the policy's (``ets.backends.llamacpp.policy._sample``): float32 exponentials, the
mass of each block of 1,024 entries, then the running sum inside the one block the draw lands in.

The logits are real: each built-in policy reading a worked answer in its prompt format, one row per
position. For each model and temperature the bench prints the time a token of each way, their
ratio, and how many of the draws (same uniform numbers) picked a different token.

    .venv/bin/python bench/sampling.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from ets.backends.llamacpp import DEFAULT_FORMAT, load_model  # noqa: E402
from ets.backends.llamacpp.engine import SlotEngine  # noqa: E402
from ets.backends.llamacpp.policy import _sample  # noqa: E402
from ets.formats import get_format  # noqa: E402
from ets.models import BUILTIN_POLICIES  # noqa: E402

QUESTION = "A baker made 24 muffins and sold 3 boxes of 6 muffins each. How many muffins are left?"
ANSWER = "The baker sold 3 * 6 = 18 muffins.\n\nSo 24 - 18 = 6 muffins are left.\n\nTherefore, the final answer is: 6"


def full_vocabulary_sample(logits: np.ndarray, temperature: float, u: float) -> int:
    """The sampler's definition, written out: float64 softmax, one running sum over the whole vocabulary,
    the token where the uniform draw ``u`` (scaled to the total) falls."""
    x = logits.astype(np.float64) / temperature
    c = np.cumsum(np.exp(x - x.max()))
    return int(np.searchsorted(c, u * c[-1], side="right").clip(0, len(c) - 1))


def real_logits(model_name: str) -> np.ndarray:
    """One row of next-token logits per position of a worked answer, as the model reads it."""
    engine = SlotEngine(load_model(model_name), n_ctx=2048, n_slots=2, n_threads=None)
    try:
        tokens = engine.tokenize(get_format(DEFAULT_FORMAT).prompt(QUESTION) + ANSWER)
        answer_start = len(engine.tokenize(get_format(DEFAULT_FORMAT).prompt(QUESTION)))
        return np.array([engine.prepare(tokens[:k])[3] for k in range(answer_start, len(tokens) + 1)])
    finally:
        engine.close()


def per_token_ms(sample, rows: np.ndarray, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for row in rows:
            sample(row)
    return (time.perf_counter() - started) * 1000 / (repeats * len(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 1.0])
    ap.add_argument("--repeats", type=int, default=5, help="passes over the rows a timing")
    args = ap.parse_args()
    print(f"{'model':22} {'vocab':>7} {'temp':>5} {'full ms':>8} {'two-level ms':>13} {'ratio':>7} {'draws differ':>13}")
    for name in BUILTIN_POLICIES:
        try:
            rows = real_logits(name)
        except Exception as e:  # noqa: BLE001 - a built-in not installed here is skipped, and said so
            print(f"{name}: skipped ({e})")
            continue
        for t in args.temperatures:
            differ = sum(_sample(row, t, np.random.default_rng([7, i])) !=
                         full_vocabulary_sample(row, t, np.random.default_rng([7, i]).random())
                         for i, row in enumerate(rows))
            rng = np.random.default_rng(0)
            full = per_token_ms(lambda row: full_vocabulary_sample(row, t, rng.random()), rows, args.repeats)
            two_level = per_token_ms(lambda row: _sample(row, t, rng), rows, args.repeats)
            print(f"{name:22} {rows.shape[1]:>7} {t:>5} {full:>8.2f} {two_level:>13.2f} {full / two_level:>6.1f}x "
                  f"{differ:>6} of {len(rows)}")


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
