"""The authors' released INR-GAN generators (StyleGAN2-ADA network pickles) read without running their code.

A StyleGAN2-ADA pickle stores every network module as a "persistent class" record: a call of
`torch_utils.persistence._reconstruct_persistent_obj(meta)` whose `meta` holds the module's Python
source and its `__dict__` (`_parameters`, `_buffers`, `_modules`, settings). Unpickling it normally
imports that source, i.e. runs code from the file. `read_network_pickle` instead unpickles with an
allow-list: persistent records become `PersistentRecord` (class name + state dict), tensors are rebuilt
by torch's own rebuild functions (storages through `torch.load(weights_only=True)`), configuration
objects the layers carry (OmegaConf) become inert `Opaque` placeholders, and any other global is
refused with `ReleasedPickleError` naming it, before anything is called.

`authors_name_table` maps the authors' G_ema state-dict names onto our `inr_gan_sg2` generator
(pipeline.models.inr_sg2) in one place; `convert_state_dict` applies it and reports unmatched,
missing and mis-shaped entries together.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor, nn


class ReleasedPickleError(ValueError):
    """A network pickle that cannot be imported; the message names the file, what was wrong and what to do."""


class PersistentRecord:
    """What a StyleGAN2-ADA persistent-class record holds, as plain data (its source is never run); also
    stands for torch's own containers (nn.ModuleList, ...), which pickle as a class plus a state dict."""

    class_name = ""

    def __init__(self, class_name: str | None = None, state: Mapping[str, Any] | None = None):
        if class_name is not None:
            self.class_name = class_name
        self.state = dict(state or {})

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD of a torch container: its __dict__
        if not isinstance(state, Mapping):
            raise ReleasedPickleError(f"a {self.class_name} holds a {type(state).__name__} state, not its __dict__")
        self.state = dict(state)


class Opaque:
    """Inert stand-in for a configuration object (OmegaConf nodes, the types they name): it stores
    whatever pickle hands it and has no behaviour, so nothing of the original class runs."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list", []).extend(values)


class EasyDictRecord(dict):
    """dnnlib.EasyDict (a dict with attribute access) as a plain dict."""

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD of a dict subclass: attributes, none expected
        pass


def _persistent_record(meta: Any) -> PersistentRecord:
    if not isinstance(meta, Mapping) or meta.get("type") != "class" or not isinstance(meta.get("state"), Mapping):
        raise ReleasedPickleError(
            f"a persistent-class record holds {type(meta).__name__} {sorted(meta) if isinstance(meta, Mapping) else ''}, "
            "not StyleGAN2-ADA's {type: 'class', class_name, state}; the pickle is not a StyleGAN2-ADA network pickle"
        )
    return PersistentRecord(str(meta.get("class_name")), dict(meta["state"]))


def _load_storage(data: bytes) -> Any:
    # torch pickles a storage as torch.save bytes; weights_only admits tensors and storages only.
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_parameter(data: Tensor, requires_grad: bool, backward_hooks: Any, *rest: Any) -> Tensor:
    return data.detach()


try:  # numpy >= 2 moved it; pickles from 2021 name numpy.core
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar


def _torch_container(name: str) -> type:
    # Their SynthesisBlock keeps extra_convs in a plain nn.ModuleList (not a persistent class).
    return type(name, (PersistentRecord,), {"class_name": name})


def _opaque_class(qualified: str) -> type:
    return type(f"Opaque[{qualified}]", (Opaque,), {})


# Every global a StyleGAN2-ADA network pickle of the INR-GAN release may name -> what it becomes here.
_CALLABLE_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("dnnlib", "EasyDict"): EasyDictRecord,
    # numpy scalars (e.g. a layer's weight_gain) rebuild from bytes and a dtype; no code is involved.
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    **{("torch.nn.modules.container", n): _torch_container(n) for n in ("ModuleList", "ModuleDict", "Sequential")},
}
# Types OmegaConf's pickled metadata names (its nodes' ref_type / object_type): kept as placeholders, not the real
# types, so a REDUCE on them cannot call anything real.
_OPAQUE_GLOBALS = {("typing", "Any"), ("collections", "defaultdict")} | {
    ("builtins", n) for n in ("dict", "list", "tuple", "int", "float", "str", "bool")
}
_OPAQUE_MODULE_PREFIXES = ("omegaconf.",)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the allow-listed globals above; `where` names the file in errors."""

    def __init__(self, file: BinaryIO, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        target = _CALLABLE_GLOBALS.get((module, name))
        if target is not None:
            return target
        if (module, name) in _OPAQUE_GLOBALS or module == "omegaconf" or module.startswith(_OPAQUE_MODULE_PREFIXES):
            return _opaque_class(f"{module}.{name}")
        raise ReleasedPickleError(
            f"'{self.where}' refers to the global {module}.{name}, which a StyleGAN2-ADA network pickle of the INR-GAN "
            "release does not contain; refused before anything was called (nothing of the pickle ran). Use one of the "
            "authors' released .pkl files (churches.pkl, bedrooms.pkl, ffhq.pkl and their -bil variants)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise ReleasedPickleError(
            f"'{self.where}' uses persistent id {pid!r} (a torch.save archive?); a StyleGAN2-ADA network pickle is a plain "
            "pickle.dump of a dict: pass the authors' .pkl file"
        )


@dataclass
class NetworkPickle:
    """The parts of a network pickle the import uses."""

    modules: dict[str, PersistentRecord]
    training_set_kwargs: dict[str, Any] = field(default_factory=dict)


def read_network_pickle(path: str | Path) -> NetworkPickle:
    """Unpickle `path` with RestrictedUnpickler; raise ReleasedPickleError for anything that is not a
    StyleGAN2-ADA network pickle (foreign, truncated, malicious)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = RestrictedUnpickler(f, str(path)).load()
    except ReleasedPickleError:
        raise
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - truncation and corruption surface as many exception types
        raise ReleasedPickleError(
            f"'{path}' cannot be unpickled ({type(err).__name__}: {err}): the file is truncated or damaged; "
            "download it again and compare its sha256 with the published one"
        ) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("G_ema"), PersistentRecord):
        held = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise ReleasedPickleError(
            f"'{path}' holds {held}, not a StyleGAN2-ADA network snapshot (a dict with 'G_ema' a persistent "
            "Generator record); pass one of the authors' released .pkl files"
        )
    modules = {k: v for k, v in data.items() if isinstance(v, PersistentRecord)}
    kwargs = data.get("training_set_kwargs")
    return NetworkPickle(modules, plain(kwargs) if isinstance(kwargs, Mapping) else {})


def record_state_dict(record: PersistentRecord, where: str = "G_ema") -> dict[str, Tensor]:
    """state_dict of a module record: parameters and persistent buffers, recursively through `_modules`
    (the names nn.Module.state_dict would give)."""
    out: dict[str, Tensor] = {}

    def walk(rec: PersistentRecord, prefix: str) -> None:
        state = getattr(rec, "state", {})  # a container pickled without its __dict__ has none
        skip = state.get("_non_persistent_buffers_set") or ()
        for kind in ("_parameters", "_buffers"):
            entries = state.get(kind)
            if not isinstance(entries, Mapping):
                raise ReleasedPickleError(
                    f"{where}: module {prefix.rstrip('.') or '(root)'} ({rec.class_name}) has no {kind} dict; "
                    "the pickle is not one of torch nn.Module records"
                )
            for name, value in entries.items():
                if value is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(value, Tensor):
                    raise ReleasedPickleError(f"{where}: {prefix}{name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        for name, child in (state.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise ReleasedPickleError(
                    f"{where}: submodule {prefix}{name} is a {type(child).__name__}, not a persistent-class record"
                )
            walk(child, f"{prefix}{name}.")

    walk(record, "")
    return out


def plain(value: Any) -> Any:
    """`value` as JSON-like data (dicts, lists, str, int, float, bool, None); anything else as its repr."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


# ---------------------------------------------------------------------------------------------------------------
# The name table. Everything that encodes how the authors' Generator lines up with ours is here.
#
# Assumptions (read from universome/inr-gan src/training/networks.py and layers.py, and checked numerically:
# docs/conformance.md, "Import"; re-check whenever pipeline/models/inr_sg2.py changes its module structure):
# - mapping: their `mapping.fc{i}` are our `mapping_network.layers.{i}`; both store weight N(0,1)/lr_mul and
#   the bias divided the same way (effective = stored * bias_gain), so values copy as they are; `mapping.w_avg`.
# - blocks: ours are StyleGAN2's blocks 4, 8, .., R, so our `blocks.{k}` is their `synthesis.b{4 * 2^k}` (blocks
#   up to the input resolution all run at it on both sides). Block 0 is their input block `synthesis.b4`
#   (GenInput -> CoordsInput -> CoordFuser), whose FMM layers are `conv1`, then `extra_convs.{j}`; every later
#   block's are `conv0`, `conv1`, then `extra_convs.{j}`; every block has a to-RGB `torgb` (skip architecture).
# - FMM layer: their weight (out, in, 1, 1) is our (out, in); the affine's output is A (out x r) then B (r x in)
#   in both, so `affine.*` copies as is.
# - embedding: only blocks that take one (block 0 and blocks above the input resolution) have a `coord_fuser`
#   (block 0's is `synthesis.b4.input.input.coord_fuser`). Their `const_embs` (1, C, r, r) is our `const`
#   (C, r, r), present when the block has constant channels; their `log_basis` then `random_basis` (the latter
#   only where random Fourier features are used) concatenated are our `frequencies`, unchanged: both are radians
#   per unit of the same [-1, 1) coordinates with y up.
# - their `resample_filter` buffers (the FIR filter of StyleGAN2's up-convs, unused by 1x1 layers with
#   nearest/bilinear upsampling) and `noise_const` / `noise_strength` (no noise in the INR-GAN configs) are
#   not imported.
# ---------------------------------------------------------------------------------------------------------------

IGNORED_SUFFIXES = ("resample_filter", "noise_const", "noise_strength")


@dataclass(frozen=True)
class NameEntry:
    """Our state-dict key <- their key(s), through `convert` (identity when None)."""

    ours: str
    theirs: tuple[str, ...]
    convert: Callable[..., Tensor] | None = None


def _squeeze_1x1(w: Tensor) -> Tensor:
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        raise ReleasedPickleError(f"an FMM weight of shape {tuple(w.shape)} is not a 1x1 convolution (out, in, 1, 1)")
    return w[:, :, 0, 0]


def _const(c: Tensor) -> Tensor:
    return c[0] if c.ndim == 4 and c.shape[0] == 1 else c


def _frequencies(*bases: Tensor) -> Tensor:
    return torch.cat(bases)


def authors_name_table(generator: nn.Module, their_keys: set[str]) -> list[NameEntry]:
    """The table for our built `generator` (an INRStyleGAN2Generator); `their_keys` only decides whether a
    block's embedding has a random basis, which is optional on their side."""
    table = [NameEntry("mapping_network.w_avg", ("mapping.w_avg",))]
    for i, _ in enumerate(generator.mapping_network.layers):
        for p in ("weight", "bias"):
            table.append(NameEntry(f"mapping_network.layers.{i}.{p}", (f"mapping.fc{i}.{p}",)))
    for k, block in enumerate(generator.blocks):
        ours, theirs = f"blocks.{k}", f"synthesis.b{4 * 2**k}"
        if k == 0:
            fuser = f"{theirs}.input.input.coord_fuser"
            layer_names = ["conv1"] + [f"extra_convs.{j}" for j in range(block.num_layers - 1)]
        else:
            fuser = f"{theirs}.coord_fuser"
            layer_names = ["conv0", "conv1"] + [f"extra_convs.{j}" for j in range(block.num_layers - 2)]
        emb = block.embedding
        if emb is not None:
            if emb.const is not None:
                table.append(NameEntry(f"{ours}.embedding.const", (f"{fuser}.const_embs",), _const))
            bases = tuple(
                f"{fuser}.{b}"
                for b in ("log_basis", "random_basis")
                if b == "log_basis" or f"{fuser}.{b}" in their_keys
            )
            table.append(NameEntry(f"{ours}.embedding.frequencies", bases, _frequencies))
        for i, name in enumerate(layer_names):
            table.append(NameEntry(f"{ours}.layers.{i}.weight", (f"{theirs}.{name}.weight",), _squeeze_1x1))
            for p in ("bias", "affine.weight", "affine.bias"):
                table.append(NameEntry(f"{ours}.layers.{i}.{p}", (f"{theirs}.{name}.{p}",)))
        for p in ("weight", "bias", "affine.weight", "affine.bias"):
            table.append(NameEntry(f"{ours}.torgb.{p}", (f"{theirs}.torgb.{p}",)))
    return table


def convert_state_dict(generator: nn.Module, theirs: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """Our state dict for `generator` from the authors' G_ema state dict `theirs`; ReleasedPickleError
    lists every unmatched, missing and mis-shaped entry at once."""
    ours_expected = generator.state_dict()
    table = authors_name_table(generator, set(theirs))
    used = {t for e in table for t in e.theirs}
    missing = sorted({t for t in used if t not in theirs})
    unmatched = sorted(k for k in theirs if k not in used and not k.endswith(IGNORED_SUFFIXES))
    not_mapped = sorted(set(ours_expected) - {e.ours for e in table})
    problems = []
    if missing:
        problems.append(f"missing in the pickle: {', '.join(missing)}")
    if unmatched:
        problems.append(f"in the pickle but not in our generator: {', '.join(unmatched)}")
    if not_mapped:
        problems.append(f"ours without an entry in the name table: {', '.join(not_mapped)}")
    out: dict[str, Tensor] = {}
    for e in table:
        if any(t not in theirs for t in e.theirs):
            continue  # listed as missing above; the shapes of every other entry are still checked
        values = [theirs[t] for t in e.theirs]
        value = e.convert(*values) if e.convert is not None else values[0]
        want = ours_expected[e.ours]
        if tuple(value.shape) != tuple(want.shape):
            problems.append(f"{e.ours} <- {'+'.join(e.theirs)}: shape {tuple(value.shape)}, ours {tuple(want.shape)}")
        out[e.ours] = value.to(want.dtype).contiguous()
    if problems:
        raise ReleasedPickleError(
            f"{where}: the pickle's G_ema does not fit the row's inr_gan_sg2 generator: " + "; ".join(problems) + ". "
            "Check that the row's generator settings match the checkpoint (resolution, channels, layers per block, "
            "embedding sizes); see pipeline/models/released.py for the name table and its assumptions"
        )
    return out
