"""Trimming of task vectors (the "sparsify" step of TIES, DARE, breadcrumbs and DELLA), in place.

Every function takes a flat float32 ``delta`` (one task vector of one tensor), zeroes the entries it
drops, optionally rescales what is left so that its L1 norm equals the original's (mergekit's
``rescale``: factor ``sum|delta| / sum|kept|``, skipped when either is below 1e-7), and returns ``delta``.
``work`` is a ``Scratch`` whose buffers are reused from tensor to tensor so that a merge does not
allocate per call. Random trimming draws from the ``torch.Generator`` it is given, so a seed fixes it (or
replays draws kept from one: ``KeptDraws``).
"""

from __future__ import annotations

import math

import torch

RESCALE_EPS = 1e-7


class Scratch:
    """Named, growing scratch buffers: ``get(name, numel, dtype)`` returns a flat view, reused next time.

    ``round_to`` is the merge's compute dtype when it is narrower than float32 (mergekit computes in the
    recipe's ``dtype``): methods keep float32 buffers and call ``round_`` where mergekit's arithmetic
    would produce a tensor of that dtype, so that both round at the same steps.
    """

    def __init__(self, device: str | torch.device = "cpu", round_to: torch.dtype | None = None):
        self.device = torch.device(device)
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self.round_to = None if round_to in (None, torch.float32, torch.float64) else round_to

    def round_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` rounded in place to the compute dtype (nothing in float32)."""
        if self.round_to is not None:
            narrow = self.get("round", tensor.numel(), self.round_to).view(tensor.shape)
            tensor.copy_(narrow.copy_(tensor))
        return tensor

    def round_value(self, value: float) -> float:
        """A scalar as the compute dtype holds it (mergekit puts weights in a tensor of that dtype)."""
        if self.round_to is None:
            return value
        return float(torch.tensor(value, dtype=self.round_to))

    def get(self, name: str, numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (name, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._buffers[key] = buf
        return buf[:numel]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


class KeptDraws:
    """One tensor's uniform draws, drawn once and replayed in order: what ``uniform_`` reads instead of a
    generator. A search merges every candidate with the same seed, and DARE's and DELLA's draws do not depend
    on the densities (only which entries they keep does), so the draws can be kept instead of drawn again."""

    def __init__(self, values: torch.Tensor):
        self.values = values
        self.position = 0

    def next_(self, out: torch.Tensor) -> torch.Tensor:
        n = out.numel()
        out.copy_(self.take(n).view(out.shape))
        return out

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` draws, as kept (read-only)."""
        if self.position + n > self.values.numel():
            raise RuntimeError(f"{n} draws asked for, {self.values.numel() - self.position} kept")
        self.position += n
        return self.values[self.position - n:self.position]


def uniform_(out: torch.Tensor, generator: torch.Generator | KeptDraws) -> torch.Tensor:
    """``out`` filled with the next uniform draws in [0, 1) of ``generator`` (or replayed from ``KeptDraws``)."""
    if isinstance(generator, KeptDraws):
        return generator.next_(out)
    return torch.rand(out.shape, generator=generator, out=out, device=out.device)


def _l1(delta: torch.Tensor, scratch: torch.Tensor | None) -> float:
    """sum |delta|, with |delta| formed in ``scratch`` when given: the same sum as ``delta.abs().sum()``
    without allocating (and page-faulting) a fresh tensor-sized buffer per call."""
    return float(torch.abs(delta, out=scratch).sum() if scratch is not None else delta.abs().sum())


def _rescale_(delta: torch.Tensor, before: float, scratch: torch.Tensor | None = None) -> torch.Tensor:
    after = _l1(delta, scratch)
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return delta
    return delta.mul_(before / after)


def kth_largest(values: torch.Tensor, k: int) -> tuple[float, int]:
    """(t, c): the k-th largest entry t of a flat float tensor (k counted from 1), exactly, and the number
    c of entries >= t (more than k when t is tied).

    A full ``kthvalue`` on tens of millions of entries is slow; a strided sample brackets the answer
    first and only the entries inside the bracket are selected exactly (falls back to the full
    selection when the bracket misses).
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} out of range for {n} values")
    if n > (1 << 18):
        step = n // 16384
        sample = values[::step].sort(descending=True).values
        s = sample.numel()
        q = k / n
        margin = 0.004 + 6.0 * math.sqrt(q * (1.0 - q) / s)
        hi = float(sample[int((q - margin) * s)]) if q - margin > 0 else math.inf
        lo = float(sample[min(s - 1, int((q + margin) * s))]) if q + margin < 1 else -math.inf
        inside = values >= lo
        above = 0
        if hi != math.inf:
            upper = values > hi
            above = int(torch.count_nonzero(upper))
            inside.logical_and_(upper.logical_not_())  # bool passes are cheap, float compares are not
        need = k - above
        if need >= 1:
            band = values[inside]
            if need <= band.numel():
                t = float(torch.kthvalue(band, band.numel() - need + 1).values)
                return t, above + int(torch.count_nonzero(band >= t))
    t = float(torch.kthvalue(values, n - k + 1).values)
    return t, int(torch.count_nonzero(values >= t))


def _keep_top_k_(delta: torch.Tensor, mag: torch.Tensor, k: int, drop: torch.Tensor) -> torch.Tensor:
    """Zero all but the k entries of largest ``mag``; ``drop`` is a bool scratch of the same size.
    (``masked_fill_`` rather than a multiplication by a bool mask: the latter is several times slower.)"""
    threshold, count = kth_largest(mag, k)
    if count > k and threshold > 0:
        # Several entries tie at the threshold and only some fit. Which ones mergekit keeps is decided by
        # torch.argsort's order among equal values (deterministic for a given torch build, whatever the
        # thread count; not the index order), so ask the same sort: slow (a full sort of the tensor), and
        # usual in bfloat16, whose task vectors take few distinct values. The sort's first `above` places
        # are the entries not <= the threshold (above it, or NaN, which the sort puts first); the tied ones
        # it keeps follow them, and only those are written back (a scatter of all k kept places costs more
        # than the rest of the tensor's merge).
        above = mag.numel() - int(torch.count_nonzero(torch.le(mag, threshold, out=drop)))
        drop[torch.argsort(mag, descending=True)[above:k]] = False
        return delta.masked_fill_(drop, 0.0)
    # mag >= threshold as 1.0 / 0.0 in place (mag is not needed after), then one multiply: faster than
    # masked_fill_ with a bool mask (a dropped negative entry becomes -0.0, which later steps treat as 0)
    return delta.mul_(mag.ge_(threshold))


def magnitude_(delta: torch.Tensor, density: float, *, rescale: bool = False, work: Scratch | None = None):
    """TIES trimming: keep the k = max(1, int(density * numel)) largest |delta| over the whole tensor;
    density 0 (or less) zeroes the delta, as mergekit does."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    work = work or Scratch(delta.device)
    n = delta.numel()
    k = max(1, int(density * n))
    mag = torch.abs(delta, out=work.get("mag", n))
    before = float(mag.sum()) if rescale else 0.0
    _keep_top_k_(delta, mag, k, work.get("keep", n, torch.bool))
    return _rescale_(delta, before, work.get("mag", n)) if rescale else delta


def random_(delta: torch.Tensor, density: float, *, generator: torch.Generator | KeptDraws, rescale: bool = True,
            work: Scratch | None = None):
    """DARE trimming: keep each entry with probability ``density`` (then the L1 rescale, by default)."""
    if density >= 1:
        return delta
    work = work or Scratch(delta.device)
    n = delta.numel()
    scratch = work.get("rand", n)  # |delta| first, then the draws
    before = _l1(delta, scratch) if rescale else 0.0
    # draws < density as 1.0 / 0.0 (in place, or straight from kept draws), then one multiply: several times
    # faster than a bool mask and masked_fill_ (a dropped negative entry becomes -0.0, which every later step
    # treats as 0)
    if isinstance(generator, KeptDraws):
        keep = torch.lt(generator.take(n), density, out=scratch)
    else:
        keep = torch.rand(n, generator=generator, out=scratch, device=delta.device).lt_(density)
    delta.mul_(keep)
    return _rescale_(delta, before, scratch) if rescale else delta


def breadcrumbs_(delta: torch.Tensor, density: float, gamma: float = 0.01, *, rescale: bool = False,
                 work: Scratch | None = None):
    """Breadcrumbs trimming: drop the ``gamma`` fraction of largest |delta| and the smallest, keeping exactly
    int(density * numel) entries (fewer top entries are dropped when both do not fit). As mergekit: the
    entries ranked n_bot .. n_bot + target - 1 in an ascending sort of |delta| survive, so ties at either
    cut-off are split the way that sort orders them."""
    if density >= 1:
        return delta
    work = work or Scratch(delta.device)
    n = delta.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    if target <= 0:
        return delta.zero_()
    mag = torch.abs(delta, out=work.get("mag", n))
    before = float(mag.sum()) if rescale else 0.0
    drop = work.get("keep", n, torch.bool)
    lo = kth_largest(mag, n - n_bot)[0] if n_bot > 0 else -math.inf
    hi = kth_largest(mag, n_top + 1)[0] if n_top > 0 else math.inf
    torch.lt(mag, lo, out=drop)
    drop |= mag > hi
    if n - int(torch.count_nonzero(drop)) != target:  # a tie at a cut-off: ask the sort mergekit uses
        drop.fill_(True)
        drop[torch.sort(mag, descending=False).indices[n_bot:n_bot + target]] = False
    delta.masked_fill_(drop, 0.0)
    return _rescale_(delta, before, mag) if rescale else delta


def della_(delta: torch.Tensor, density: float, epsilon: float, *, shape: tuple[int, ...],
           generator: torch.Generator | KeptDraws, rescale: bool = True, work: Scratch | None = None):
    """DELLA (MagPrune) trimming: keep an entry with probability growing linearly with its magnitude rank,
    from density - epsilon (smallest) to density + epsilon (largest). Ranks run along axis 1 of the
    tensor's shape (the whole tensor when it is 1-D), as mergekit ranks them."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    full = delta.view(shape) if len(shape) >= 2 else delta.view(1, -1)
    before = float(delta.abs().sum()) if rescale else 0.0
    size = full.shape[1]
    ranks = full.abs().argsort(dim=1).argsort(dim=1)  # 0 for the smallest along axis 1
    probs = ranks.to(torch.float32).div_(max(1, size - 1)).mul_(2 * epsilon).add_(density - epsilon)
    draws = uniform_(torch.empty(full.shape, device=delta.device), generator)
    full.masked_fill_(draws >= probs, 0.0)
    return _rescale_(delta, before) if rescale else delta
