"""Every organism's brain: its own weights, read from its genome.

A genome is a dict of float32 tensors, each with the lattice's axes in front (one
tensor per cell); ``GenomeLayout`` names them and their per-cell shapes. Direction slots are encoded by one small encoder and scored by one scorer, both
shared across slots, so the genome's length does not depend on how many axes a region
has: a genome evolved in 7-D still means something in a 2-D region.

Shapes below use N for organisms (cells, flattened), S for direction slots.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hca.config import MAX_AXES, Brain

# Outputs of the head, after the signals; ANSWER is read by tasks (hca.tasks).
STAY, MOVE, REPRODUCE, ENDOW, ABSORB, ANSWER = range(6)
N_ACTIONS = 6
# What a task shows the organism at its site (hca.tasks lays them out); zeros elsewhere.
TASK_INPUTS = 11
SLOT_FEATURES = 5  # occupied, exists, log2(stretch) / 8, curled, sign
PLASTIC_LIMIT = 4.0  # plastic weights stay within +-PLASTIC_LIMIT
WEIGHT_LIMIT = 16.0  # mutation never takes a weight beyond +-WEIGHT_LIMIT
LOG_SCALE_RANGE = (-12.0, 2.0)  # per-tensor mutation scales stay within e**range
LOG_RATE_RANGE = (-20.0, 2.0)  # Hebbian rates stay within e**range


@dataclass(frozen=True)
class GenomeLayout:
    """Where each tensor lies in a genome row, and which tensors mutate how."""

    signals: int
    hidden: int
    encoder: int
    tensors: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) in row order

    @staticmethod
    def of(brain: Brain) -> GenomeLayout:
        c, h, e = brain.signals, brain.hidden, brain.encoder
        self_inputs = c + h + 2 + TASK_INPUTS + MAX_AXES
        slot_inputs = c + SLOT_FEATURES
        outputs = c + N_ACTIONS
        weights = (
            ("encoder_w", (slot_inputs, e)),
            ("encoder_b", (e,)),
            ("body_w", (self_inputs + e, h)),
            ("body_b", (h,)),
            ("gate", (h,)),
            ("head_w", (outputs, h)),  # (to, from): each output reads one contiguous row
            ("head_b", (outputs,)),
            ("score_w", (e + h,)),
            ("log_learning_rate", (1,)),
        )
        # One inherited mutation log-scale per tensor above; they mutate themselves.
        tensors = weights + (("log_mutation", (len(weights),)),)
        return GenomeLayout(c, h, e, tensors)

    @property
    def outputs(self) -> int:
        return self.signals + N_ACTIONS

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors)

    def offsets(self) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for name, shape in self.tensors:
            out[name] = (start, start + math.prod(shape))
            start += math.prod(shape)
        return out

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.tensors)

    def entries(self, name: str) -> np.ndarray:
        """(*shape,) int32: the number of each entry of tensor ``name`` in the genome, the
        word that keys its random draws (founders' weights, mutations). Entries are
        numbered in row order, except the head's weights: stored (outputs, hidden), they
        keep the numbers of their first layout, (hidden, outputs), so that a seed draws
        the same founders and mutations in both."""
        start, end = self.offsets()[name]
        shape = self.shapes()[name]
        numbers = np.arange(start, end, dtype=np.int32)
        if name == "head_w":
            return numbers.reshape(shape[::-1]).T
        return numbers.reshape(shape)


@struct.dataclass
class Thought:
    hidden: jax.Array  # (N, H) float32, the new hidden state (inactive units are 0)
    outputs: jax.Array  # (N, signals + N_ACTIONS) float32, the head's raw outputs
    squashed: jax.Array  # (N, signals + N_ACTIONS) float32, tanh of the outputs
    slot_scores: jax.Array  # (N, S) float32, preference for each direction slot
    active_units: jax.Array  # (N,) int32, hidden units the genome keeps switched on
    learning_rate: jax.Array  # (N,) float32, the inherited Hebbian rate


def think(
    layout: GenomeLayout,
    genome: dict[str, jax.Array],  # {name: (N, *shape) float32}
    self_inputs: jax.Array,  # (N, self_inputs) float32
    slot_inputs: jax.Array,  # (N, S, signals + SLOT_FEATURES) float32
    slot_exists: jax.Array,  # (N, S) bool
    plastic: jax.Array,  # (N, outputs, H) float32
    scored: tuple[tuple[tuple[int, ...], ...], jax.Array] | None = None,
) -> Thought:
    """One forward pass of every organism's own network.

    ``scored`` = (sets, which): only the slots in ``sets[which]`` are scored (the others
    score -inf), e.g. those that can be claimed now; None: every slot."""
    w = genome
    # Per-organism weights: no batched dot (slow on CPU for such small matrices), but
    # multiply-adds that stream each weight once.
    encoded = jnp.tanh(
        (slot_inputs[..., None] * w["encoder_w"][:, None]).sum(axis=2) + w["encoder_b"][:, None, :]
    )
    exists = slot_exists.astype(jnp.float32)
    count = jnp.maximum(exists.sum(axis=1, keepdims=True), 1.0)
    # A plain reduction: XLA CPU makes the einsum a batched dot, twice as slow here.
    pooled = (encoded * exists[:, :, None]).sum(axis=1) / count
    body_in = jnp.concatenate([self_inputs, pooled], axis=1)
    active = w["gate"] > 0.0
    hidden = jnp.tanh(_matvec(body_in, w["body_w"]) + w["body_b"])
    hidden = jnp.where(active, hidden, 0.0)
    # Hidden units are the minor axis of the head and its plastic weights: each output is
    # a reduction over one contiguous row, and the Hebbian step a product that vectorises
    # over the hidden units (the other way round, the head took twice as long).
    outputs = ((w["head_w"] + plastic) * hidden[:, None, :]).sum(axis=2) + w["head_b"]
    body_score = (hidden * w["score_w"][:, layout.encoder :]).sum(axis=1, keepdims=True)
    if scored is None:
        scores = (encoded * w["score_w"][:, None, : layout.encoder]).sum(axis=2) + body_score
    else:
        # The genome's score weights go into the switch whole: a slice of them made
        # outside it is an operand XLA writes out (1.3 ms a tick on 131,072 cells).
        sets, which = scored
        branches = [functools.partial(_scores, slots) for slots in sets]
        scores = jax.lax.switch(which, branches, encoded, w["score_w"], body_score)
    return Thought(
        hidden=hidden,
        outputs=outputs,
        # Once for every reader (signals, answers, the Hebbian step): XLA computes an
        # expression again in each kernel that reads it, but not a tanh it has stored.
        squashed=_tanh_rows(outputs),
        slot_scores=scores,
        active_units=active.sum(axis=1, dtype=jnp.int32),
        learning_rate=jnp.exp(jnp.clip(w["log_learning_rate"][:, 0], *LOG_RATE_RANGE)),
    )


def _tanh_rows(x: jax.Array) -> jax.Array:
    """tanh of (N, K), bitwise, computed on rows padded to a multiple of 8 entries: on
    rows of 10 XLA CPU's loop over a row is too short to vectorise, and the tanh ran
    as scalar code (2.3 times slower on 131,072 rows)."""
    width = -x.shape[-1] % 8
    return jnp.tanh(jnp.pad(x, ((0, 0), (0, width))))[:, : x.shape[-1]]


def _scores(slots: tuple[int, ...], encoded, score_w, body_score) -> jax.Array:
    """(N, S) scores of the direction ``slots`` only, -inf for the others."""
    score_slot = score_w[:, : encoded.shape[2]]
    picked = jnp.concatenate([encoded[:, slot : slot + 1] for slot in slots], axis=1)
    part = (picked * score_slot[:, None, :]).sum(axis=2) + body_score
    columns = [jnp.full(body_score.shape, -jnp.inf, jnp.float32)] * encoded.shape[1]
    for k, slot in enumerate(slots):
        columns[slot] = part[:, k : k + 1]
    return jnp.concatenate(columns, axis=1)


def _matvec(x: jax.Array, w: jax.Array) -> jax.Array:
    """Per-row ``x[n] @ w[n]`` for (N, I) x (N, I, O): one multiply-add per input, each
    reading a contiguous (N, O) slab, which streams ``w`` at memory speed."""
    out = x[:, 0:1] * w[:, 0, :]
    for i in range(1, x.shape[1]):
        out = out + x[:, i : i + 1] * w[:, i, :]
    return out


def hebbian(
    plastic: jax.Array,  # (..., outputs, H)
    hidden: jax.Array,  # (..., H), Thought.hidden
    post: jax.Array,  # (..., outputs), see ``post_synaptic``
) -> jax.Array:
    """Reward-modulated Hebbian step: dP = rate * modulator * outer(tanh(outputs), hidden).

    Any leading axes: called on the lattice's, the new weights have the shape of the old
    ones, so XLA writes them in place."""
    return jnp.clip(plastic + post[..., :, None] * hidden[..., None, :], -PLASTIC_LIMIT, PLASTIC_LIMIT)


def post_synaptic(thought: Thought, modulator: jax.Array) -> jax.Array:
    """(N, outputs): the Hebbian step's factor per output, rate * modulator * tanh(output);
    ``modulator`` (N,) float32 in [-1, 1]."""
    return thought.squashed * (thought.learning_rate * modulator)[:, None]
