"""Particle filtering (``particle_filtering``): the width is a population of particles, resampled at every
step in proportion to what the PRM thinks of each (Puri et al., arXiv 2502.01618; docs/methods.md#particle-filtering).

Each candidate is one particle. Its weight is the softmax, over the candidates, of the logit of its PRM
score divided by ``pf_temperature`` (at 1, the score's odds ``p / (1 - p)``, normalised). The remaining
width is drawn from the candidates with replacement (multinomial resampling), and a candidate drawn
``k`` times gets ``k`` children: every copy of a particle extends by one step. The root is the one
candidate of depth 0, so all ``width`` particles start from the prompt. A finished trajectory has left
the population and keeps its slot of the width (the loop's remaining width), so only unfinished
candidates are drawn.

The draw is keyed by (``seed``, problem id, depth): a fixed seed gives the same resampling whatever the
thread timing and whichever other problems run beside it (docs/algorithm.md#particle-filtering).
"""

from __future__ import annotations

import numpy as np

from ets.backends.base import selection_stream
from ets.selection.common import SelectionParams
from ets.tree import Tree

# a score of exactly 0 or 1 has an infinite logit: clipped to [SCORE_CLIP, 1 - SCORE_CLIP], as its-hub does
SCORE_CLIP = 1e-7
_SEED_BITS = (1 << 64) - 1  # numpy's seed sequence takes non-negative words; a negative seed wraps


def log_weights(scores: list[float], temperature: float) -> np.ndarray:
    """``logit(score) / temperature`` per particle (scores clipped away from 0 and 1)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), SCORE_CLIP, 1.0 - SCORE_CLIP)
    return (np.log(p) - np.log1p(-p)) / temperature


def resampling_weights(scores: list[float], temperature: float) -> np.ndarray:
    """The paper's resampling distribution: the softmax of :func:`log_weights` (sums to 1)."""
    z = log_weights(scores, temperature)
    w = np.exp(z - z.max())  # shifting by the maximum changes no ratio and cannot overflow
    return w / w.sum()


def resampling_rng(seed: int | None, problem_id, depth: int) -> np.random.Generator:
    """The generator of one depth's draw: keyed by the config's seed (0 when unset), the problem and the depth."""
    return np.random.default_rng([(seed or 0) & _SEED_BITS, selection_stream(problem_id, depth)])


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    scores = []
    for c in candidates:
        score = tree[c].score
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"particle_filtering: node {c} has PRM score {score}, outside [0, 1]; its weight is the "
                             "logit of a probability (use a PRM that scores steps as probabilities, or another select_method)")
        scores.append(score)
    weights = resampling_weights(scores, params.pf_temperature)
    depth = tree[candidates[0]].depth
    counts = resampling_rng(params.seed, params.problem_id, depth).multinomial(max(remaining, 0), weights)
    return {c: int(k) for c, k in zip(candidates, counts)}
