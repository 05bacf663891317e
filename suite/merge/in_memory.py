"""Merging sources that are already in memory, into preallocated tensors: what the evolver calls.

``TaskVectorMerger`` is built once from the base and source state dicts and a merge method. Each
``merge_into`` call writes the merged value of every tensor into the caller's tensors in place: per
tensor, the sources (and for delta methods, source - base) are formed in float32 scratch buffers the
size of one tensor, reused from tensor to tensor and from candidate to candidate; a float32 base is
read in place and a float32 candidate is written in place (no scratch for either). So a candidate costs no
disk I/O and no model-sized allocation, and the merger holds no copy of any model: the sources stay in
their own dtype (bfloat16 stays bfloat16) on their own device. The merge runs on ``device`` (the
candidate's: ``device: cuda`` merges on the GPU). ``precompute_deltas=True`` trades memory for a little
speed: float32 task vectors of every source are kept (4 bytes a parameter per source). ``keep_draws=True``
trades the same memory for much speed with DARE or DELLA, whose random draws are most of a CPU merge's
time: each tensor's draws are kept from the first candidate and replayed for the next ones of the same
seed (the same masks). The on-disk engine runs the very same per-tensor code (``merge_tensor``), so both
give the same tensors for the same parameters and seed. Random methods seed each tensor's generator from
(seed, the tensor's name in the saved checkpoint): ``seed_names`` maps the merger's names to those, so a
run's DARE masks are the ones ``evosuite merge`` draws for its ``best_recipe.yaml``.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, Sequence

import torch

from evosuite.api import MergeMethod
from evosuite.errors import ModelError
from evosuite.merge.sparsify import KeptDraws, Scratch

#: ``params_for(tensor_name) -> (per-source parameter dicts in source order, global parameter dict)``.
ParamsFor = Callable[[str], tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]]


def tensor_seed(seed: int, name: str) -> int:
    """The seed of one tensor's generator: depends on the run seed and the tensor name only, so a random
    method gives the same result whatever the order, the thread count, on disk or in memory."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def tensor_generator(seed: int, name: str, device: str | torch.device) -> torch.Generator:
    """The seeded generator of tensor ``name``'s random draws (one stream, whether drawn now or kept)."""
    return torch.Generator(device=device).manual_seed(tensor_seed(seed, name))


def draw_stream(seed: int, name: str, numel: int, sources: int, device: str | torch.device) -> torch.Tensor:
    """The uniform draws the generator ``merge_tensor`` gives tensor ``name`` yields to DARE or DELLA: ``numel``
    per source at most, drawn ``numel`` at a time as they draw them (on a GPU the values depend on that)."""
    generator = tensor_generator(seed, name, device)
    values = torch.empty(sources * numel, device=device)
    for i in range(sources):
        torch.rand(numel, generator=generator, out=values[i * numel:(i + 1) * numel])
    return values


def merge_tensor(method: MergeMethod, name: str, base: torch.Tensor | None, sources: list[torch.Tensor],
                 model_params: Sequence[Mapping[str, Any]], global_params: Mapping[str, Any], *,
                 seed: int, out: torch.Tensor, work: Scratch, shape: tuple[int, ...],
                 draws: KeptDraws | None = None) -> torch.Tensor:
    """Merge one tensor into flat float32 ``out``.

    ``base`` and ``sources`` are flat float32; for a method with ``takes_deltas`` the sources are task
    vectors the method may overwrite. Methods without ``merge_flat`` (third-party plugins) go through
    ``MergeMethod.merge`` with reshaped, full-valued tensors. ``draws``: the tensor's generator's draws,
    kept by the caller (``draw_stream``), replayed instead of drawn again (for ``replays_draws`` methods).
    """
    generator = draws
    if method.random and generator is None:
        generator = tensor_generator(seed, name, out.device)
    merge_flat = getattr(method, "merge_flat", None)
    if merge_flat is not None:
        merge_flat(sources, base, model_params, global_params, generator=generator, out=out, work=work,
                   shape=shape)
        return out
    full = [s.view(shape) for s in sources]
    result = method.merge(full, base.view(shape) if base is not None else None, model_params, global_params,
                          generator=generator)
    out.copy_(result.reshape(-1))
    return out


class TaskVectorMerger:
    """Reusable in-memory merger over fixed sources.

    ``base``: name -> tensor of the base model (None for methods without one); ``sources``: one
    name -> tensor mapping per merged model, in the order of the parameter lists; ``names``: the tensors
    to merge (default: all of the base's, or the first source's); ``device``: where the arithmetic runs;
    ``seed_names``: name -> the tensor's full name (its checkpoint name), which random methods seed from
    (default: the name itself).
    """

    def __init__(self, base: Mapping[str, torch.Tensor] | None, sources: Sequence[Mapping[str, torch.Tensor]],
                 method: MergeMethod, *, names: Sequence[str] | None = None, device: str | torch.device = "cpu",
                 precompute_deltas: bool = False, keep_draws: bool = False,
                 seed_names: Mapping[str, str] | None = None):
        if method.requires_base and base is None:
            raise ModelError(f"merge method {method.name!r} needs a base model", "pass the base state dict")
        self.method = method
        self.device = torch.device(device)
        reference = base if base is not None else sources[0]
        self.names = list(names) if names is not None else list(reference)
        self.seed_names = dict(seed_names or {})
        self.takes_deltas = bool(getattr(method, "takes_deltas", False))
        self.work = Scratch(self.device)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.base = base
        self.sources = list(sources)
        for name in self.names:
            self.shapes[name] = tuple(reference[name].shape)
            for i, src in enumerate(self.sources):
                if name not in src:
                    raise ModelError(f"tensor {name} is missing from source {i}", "merge models of one architecture")
                if tuple(src[name].shape) != self.shapes[name]:
                    raise ModelError(f"tensor {name} has shape {tuple(src[name].shape)} in source {i} but "
                                     f"{self.shapes[name]} in the reference", "merge models of one architecture")
        #: Kept float32 task vectors (``precompute_deltas``), else None: formed per tensor per candidate.
        self.deltas: list[dict[str, torch.Tensor]] | None = None
        if precompute_deltas and self.takes_deltas:
            self.deltas = [{name: self._flat(src[name]) - self._flat(base[name]) for name in self.names}
                           for src in self.sources]
        #: ``keep_draws`` for a method that replays them: each tensor's draws (one float32 per entry per
        #: source), kept from the first candidate for the next ones of the same seed; else None.
        self.draws: dict[str, torch.Tensor] | None = None
        if keep_draws and getattr(method, "replays_draws", False):
            self.draws = {}
        self._draws_seed: int | None = None

    def _direct(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The flat float32 view of ``tensor`` when it can be used as is (float32, contiguous, on the
        merge's device), else None: then it goes through a scratch buffer."""
        if tensor.dtype == torch.float32 and tensor.device == self.device and tensor.is_contiguous():
            return tensor.detach().view(-1)
        return None

    def _flat(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(self.device, torch.float32).reshape(-1)

    def option_bytes(self) -> dict[str, int]:
        """What ``precompute_deltas`` and ``keep_draws`` hold (or will, once the first candidate has drawn):
        4 bytes a merged entry per source each, whatever the models' dtype."""
        entries = sum(int(torch.Size(shape).numel()) for shape in self.shapes.values()) * len(self.sources)
        held = {}
        if self.deltas is not None:
            held["precompute_deltas"] = 4 * entries
        if self.draws is not None:
            held["keep_draws"] = 4 * entries
        return held

    def extra_bytes(self) -> int:
        """Memory the merger holds beyond the sources: kept task vectors and scratch buffers."""
        kept = sum(t.numel() * t.element_size() for d in self.deltas or [] for t in d.values())
        kept += sum(t.numel() * t.element_size() for t in (self.draws or {}).values())
        return kept + self.work.nbytes()

    def _kept_draws(self, name: str, numel: int, seed: int) -> KeptDraws | None:
        if self.draws is None:
            return None
        if seed != self._draws_seed:
            self.draws.clear()
            self._draws_seed = seed
        seed_name = self.seed_names.get(name, name)
        if name not in self.draws:
            self.draws[name] = draw_stream(seed, seed_name, numel, len(self.sources), self.device)
        return KeptDraws(self.draws[name])

    def merge_into(self, out: Mapping[str, torch.Tensor], params_for: ParamsFor, *, seed: int = 0) -> None:
        """Write the merged value of every tensor into ``out[name]`` (any dtype and device), in place."""
        for name in self.names:
            shape = self.shapes[name]
            numel = int(torch.Size(shape).numel())
            model_params, global_params = params_for(name)
            base = None
            if self.base is not None:
                base = self._direct(self.base[name])  # read-only for every method: no copy needed
                if base is None:
                    base = self.work.get("base", numel).copy_(self.base[name].detach().reshape(-1))
            # Scratch copies in float32: methods with takes_deltas overwrite their inputs.
            sources = []
            for i, src in enumerate(self.sources):
                buffer = self.work.get(f"src{i}", numel)
                tensor = src[name].detach()
                if self.deltas is not None:
                    buffer.copy_(self.deltas[i][name])
                elif self.takes_deltas and tensor.device == self.device and tensor.dtype == torch.float32:
                    # source - base in one pass. Not for a narrower source: on the CPU torch subtracts mixed
                    # dtypes entry by entry (bfloat16 - float32 took 2.3 ns an entry against 0.9 ns for the
                    # widening copy and a float32 subtraction below: 5 s of a 24 s DARE-TIES candidate at
                    # 1.1B parameters); on a GPU the extra pass costs little
                    torch.sub(tensor.reshape(-1), base, out=buffer)
                else:
                    buffer.copy_(tensor.reshape(-1))
                    if self.takes_deltas:
                        buffer.sub_(base)
                sources.append(buffer)
            target = self._direct(out[name])  # a float32 candidate is written straight into
            result = merge_tensor(self.method, self.seed_names.get(name, name), base, sources, model_params,
                                  global_params, seed=seed, work=self.work, shape=shape,
                                  out=target if target is not None else self.work.get("out", numel),
                                  draws=self._kept_draws(name, numel, seed))
            if target is None:
                out[name].copy_(result.view(shape))


def merge_once(out: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor] | None,
               sources: Sequence[Mapping[str, torch.Tensor]], method: MergeMethod, params_for: ParamsFor, *,
               seed: int = 0, seed_names: Mapping[str, str] | None = None) -> None:
    """One merge written into ``out``: for a fixed recipe scored once (the same tensors as a
    ``TaskVectorMerger`` with the same parameters and seed, since it is one)."""
    device = next(iter(out.values())).device
    TaskVectorMerger(base, sources, method, names=list(out), device=device,
                     seed_names=seed_names).merge_into(out, params_for, seed=seed)
