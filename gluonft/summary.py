"""Keras-like architecture summary of a Gluon Block, as data first and a table second.

`summary(net, image_size=...)` runs one forward pass of a zero image through `net` with forward
hooks on its layers and returns a frozen `Summary`: one `LayerRow` per layer (structural name,
type, output shape, own parameter count, trainable count) plus exact totals. `Summary.to_table()`
renders it; `Summary.to_dict()` is JSON-serialisable for result records.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.base import MXNetError

__all__ = ["LayerRow", "Summary", "summary"]

# Shown in the table for a layer that exists but did not run in the forward pass.
_NOT_RUN = "(not run)"
# Shown in the table instead of the empty structural name of the root block.
_ROOT = "<root>"


@dataclass(frozen=True)
class LayerRow:
    """One layer of a summary.

    Attributes:
        name: Structural attribute path from the root, e.g. ``"features.4.0.conv1"`` (the names
            `Block.save_parameters` uses, not the auto-generated prefixes such as
            ``resnetv10_conv0``). The root block itself is ``""``.
        type: Class name of the block, e.g. ``"Conv2D"``.
        output_shape: Shape of the block's output from the summary's forward pass, including
            the real batch dimension, e.g. ``(1, 64, 32, 32)``; a tuple of shapes for a block
            returning several arrays; ``None`` when the block did not run in that pass.
        params: Number of scalars in this block's own parameters (children excluded). A
            parameter shared by several blocks is counted in the first row that holds it only,
            so that the rows add up to the total.
        trainable: The part of ``params`` whose ``grad_req != 'null'``.
    """

    name: str
    type: str
    output_shape: Optional[tuple]
    params: int
    trainable: int


@dataclass(frozen=True)
class Summary:
    """Architecture summary returned by :func:`summary`.

    Attributes:
        rows: Layers in execution order; layers that did not run follow, in structural order.
        total_params: Scalars in all parameters of the net, each shared parameter once
            (BatchNorm running statistics included, as non-trainable).
        trainable_params: Scalars in parameters whose ``grad_req != 'null'``.
        non_trainable_params: ``total_params - trainable_params``.
        input_shape: Shape of the input used, ``(batch_size, 3, image_size, image_size)``.
        output_shape: Shape of the net's output (a tuple of shapes if it returns several).
    """

    rows: Tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    input_shape: tuple
    output_shape: Optional[tuple]

    def to_dict(self) -> dict:
        """Return the summary as plain JSON-serialisable data (shapes become lists).

        Returns:
            A dict with ``rows`` (list of dicts with the `LayerRow` fields), the three totals,
            ``input_shape`` and ``output_shape``.

        Example:
            >>> json.dumps(summary(net, image_size=32).to_dict())  # doctest: +SKIP
        """
        return {
            "rows": [{"name": r.name, "type": r.type,
                      "output_shape": _shape_to_list(r.output_shape),
                      "params": r.params, "trainable": r.trainable} for r in self.rows],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "input_shape": _shape_to_list(self.input_shape),
            "output_shape": _shape_to_list(self.output_shape),
        }

    def to_table(self, max_rows: Optional[int] = None) -> str:
        """Render a Keras-style fixed-width table followed by the totals.

        Args:
            max_rows: If given and the summary has more rows, show only the first
                ``ceil(max_rows / 2)`` and the last ``floor(max_rows / 2)`` rows with an
                ellipsis line saying how many are hidden. ``0`` shows only the totals.

        Returns:
            The table as one string (no trailing newline).

        Example:
            >>> print(summary(net, image_size=32).to_table(max_rows=10))  # doctest: +SKIP
        """
        if max_rows is not None and (isinstance(max_rows, bool)
                                     or not isinstance(max_rows, numbers.Integral)
                                     or max_rows < 0):
            raise ValueError(f"max_rows must be None or an int >= 0, got {max_rows!r}")
        header = ("Layer (type)", "Output shape", "Param #", "Trainable")
        cells = [(f"{r.name or _ROOT} ({r.type})",
                  _NOT_RUN if r.output_shape is None else str(r.output_shape),
                  f"{r.params:,}", f"{r.trainable:,}") for r in self.rows]
        # Widths come from every row, not only the shown ones, so a truncated table has the
        # same layout as the full one.
        widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]

        def line(values):
            name, shape, params, trainable = values
            return "  ".join([name.ljust(widths[0]), shape.ljust(widths[1]),
                              params.rjust(widths[2]), trainable.rjust(widths[3])]).rstrip()

        width = sum(widths) + 2 * (len(widths) - 1)
        hidden = 0
        shown = cells
        if max_rows is not None and len(cells) > max_rows:
            head, tail = math.ceil(max_rows / 2), max_rows // 2
            hidden = len(cells) - head - tail
            shown = cells[:head] + [None] + (cells[len(cells) - tail:] if tail else [])
        out = [f"Input shape: {self.input_shape}    Output shape: {self.output_shape}",
               "_" * width, line(header), "=" * width]
        for c in shown:
            out.append(f"... {hidden:,} more rows ..." if c is None else line(c))
        out += ["=" * width,
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}",
                "_" * width]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_table()


def summary(net: gluon.Block, *, image_size: int, ctx: Optional[mx.Context] = None,
            batch_size: int = 1) -> Summary:
    """Summarise the layers of a Gluon block with one forward pass of a zero image.

    Forward hooks on every leaf block (and on the rare non-leaf block that owns parameters)
    record output shapes in execution order; the hooks are removed afterwards, also on error.
    The pass runs under ``autograd.pause(train_mode=False)``: inference mode, so BatchNorm
    running statistics and Dropout are untouched, and nothing is recorded even inside an
    ``autograd.record()`` scope.

    Hybridized nets: a hybridized block runs its cached graph and skips its children's hooks,
    so each HybridBlock's ``_active`` flag is switched off for the pass and set back to its
    previous value afterwards (also on error). ``hybridize()`` itself is not called, so each
    block keeps its own flags (``static_alloc``, ``static_shape``, backend options) and any
    cached graph it already built; the next forward uses it as before.

    Deferred initialisation: the pass completes it, as any first forward would. For nets whose
    ``Dense`` input size depends on the image size (AlexNet, VGG), run the summary at the size
    you will train with. Parameters of blocks that did not run keep an unknown shape and make
    the summary fail, since the totals could not be exact.

    Args:
        net: Any initialised ``gluon.Block`` taking one NCHW image batch.
        image_size: Height and width of the zero image, an int >= 1.
        ctx: Context of the input; default: the context of the net's parameters (the first
            one if they live on several), or the current context for a net without parameters.
        batch_size: Batch dimension of the input, an int >= 1.

    Returns:
        A frozen :class:`Summary`; ``str()`` of it is the table.

    Raises:
        TypeError: ``net`` is not a Gluon ``Block``.
        ValueError: bad ``image_size``/``batch_size``/``ctx``; the forward pass failed (input too
            small or otherwise incompatible, original error chained); parameter shapes left
            unknown after the pass.
        RuntimeError: some parameters are neither initialised nor deferred-initialised.

    Example:
        >>> net = gluoncv.model_zoo.get_model("cifar_resnet20_v1", classes=10)
        >>> net.initialize()
        >>> s = summary(net, image_size=32)
        >>> s.total_params, s.rows[-1].output_shape
        (274042, (1, 10))
        >>> print(s.to_table(max_rows=8))  # doctest: +SKIP
    """
    if not isinstance(net, gluon.Block):
        raise TypeError(f"net must be a mxnet.gluon.Block, got {type(net).__name__}: {net!r:.80}")
    image_size = _positive_int("image_size", image_size)
    batch_size = _positive_int("batch_size", batch_size)

    blocks = _walk(net)
    owned = [(path, blk, _own_params(blk)) for path, blk in blocks]
    names = _param_names(owned)
    params = list({id(p): p for _, _, ps in owned for p in ps}.values())
    # collect_params() reads each block's ParameterDict and _own_params() reads those too, so
    # this adds nothing for ordinary nets; it is a guard so the total is never an undercount.
    known = {id(p) for p in params}
    for p in net.collect_params().values():
        if id(p) not in known:
            known.add(id(p))
            params.append(p)
            names.setdefault(id(p), p.name)
    ctx = _resolve_ctx(net, params, names, ctx)

    input_shape = (batch_size, 3, image_size, image_size)
    # Leaves, plus non-leaves that own parameters: every parameter belongs to some row.
    hooked = [(path, blk) for path, blk, ps in owned if not blk._children or ps]
    seen = {}  # id(block) -> output shape of its first call; dicts keep insertion order

    def record(block, _inputs, output):
        # A block called several times (weight sharing) keeps the shape of its first call.
        seen.setdefault(id(block), _shape_of(output))

    handles = []
    hybrid = [(blk, blk._active) for _, blk in blocks if isinstance(blk, gluon.HybridBlock)]
    try:
        for blk, _ in hybrid:
            blk._active = False
        for _, blk in hooked:
            handles.append(blk.register_forward_hook(record))
        x = mx.nd.zeros(input_shape, ctx=ctx)
        try:
            with autograd.pause(train_mode=False):
                out = net(x)
                for arr in _flatten(out):
                    # Surface asynchronous engine errors here, inside the try.
                    arr.wait_to_read()
        except (MXNetError, ValueError) as e:
            raise ValueError(
                f"summary(): the forward pass of {type(net).__name__} failed on input "
                f"{input_shape} (image_size={image_size}): the input is too small for, or "
                f"otherwise incompatible with, this net. MXNet said: {_short_error(e)}") from e
    finally:
        for h in handles:
            h.detach()
        for blk, active in hybrid:
            blk._active = active

    by_id = {id(blk): (path, blk) for path, blk in hooked}
    order = [by_id[i] for i in seen] + [pb for pb in hooked if id(pb[1]) not in seen]
    own = {id(blk): ps for _, blk, ps in owned}

    unknown = [names[id(p)] for p in params if _size(p) is None]
    if unknown:
        raise ValueError(
            f"summary(): {len(unknown)} parameter(s) of {type(net).__name__} still have an "
            f"unknown shape after the forward pass (their blocks did not run, so deferred "
            f"initialisation could not finish): {_listing(unknown)}. Give those layers "
            f"explicit input sizes (e.g. in_units/in_channels) to count them.")

    counted = set()
    rows = []
    for path, blk in order:
        n_params = n_trainable = 0
        for p in own[id(blk)]:
            if id(p) in counted:
                continue
            counted.add(id(p))
            n_params += _size(p)
            n_trainable += _size(p) if p.grad_req != "null" else 0
        rows.append(LayerRow(name=path, type=type(blk).__name__, output_shape=seen.get(id(blk)),
                             params=n_params, trainable=n_trainable))
    total = sum(_size(p) for p in params)
    trainable = sum(_size(p) for p in params if p.grad_req != "null")
    return Summary(rows=tuple(rows), total_params=total, trainable_params=trainable,
                   non_trainable_params=total - trainable, input_shape=input_shape,
                   output_shape=_shape_of(out))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _walk(net: gluon.Block) -> list:
    """(structural path, block) for every block under net, depth first, each block once."""
    out, seen = [], set()

    def visit(path, blk):
        if id(blk) in seen:  # a block registered twice (shared) keeps its first path
            return
        seen.add(id(blk))
        out.append((path, blk))
        for key, child in blk._children.items():
            visit(f"{path}.{key}" if path else key, child)

    visit("", net)
    return out


def _own_params(blk: gluon.Block) -> list:
    """Parameters a block holds itself: attributes (`_reg_params`) and its ParameterDict."""
    # The ParameterDict also holds parameters created with params.get() but kept outside
    # attributes; collect_params() counts those, so the rows must too.
    found = {id(p): p for p in blk._reg_params.values()}
    for p in blk.params.values():
        found.setdefault(id(p), p)
    return list(found.values())


def _param_names(owned: list) -> dict:
    """id(parameter) -> structural name like 'features.0.weight', for error messages."""
    names = {}
    for path, blk, _ in owned:
        prefix = f"{path}." if path else ""
        for attr, p in blk._reg_params.items():
            names.setdefault(id(p), prefix + attr)
        for p in blk.params.values():
            names.setdefault(id(p), prefix + p.name)
    return names


def _resolve_ctx(net, params, names, ctx):
    """Check every parameter is initialised (or deferred) and pick the input's context."""
    where, missing = [], []
    for p in params:
        try:
            where.append(p.list_ctx())
        except RuntimeError:
            missing.append(names[id(p)])
    if missing:
        raise RuntimeError(
            f"summary(): {len(missing)} of {len(params)} parameters of {type(net).__name__} are "
            f"not initialised: {_listing(missing)}. "
            f"Call net.initialize(ctx=...) (or initialise the new layer) or "
            f"net.load_parameters(path) first.")
    if ctx is None:
        return where[0][0] if where else mx.context.current_context()
    if not isinstance(ctx, mx.Context):
        raise ValueError(f"ctx must be a single mxnet.Context such as mx.cpu(), got {ctx!r}")
    if any(ctx not in cs for cs in where):
        elsewhere = sorted({str(c) for cs in where for c in cs})
        raise ValueError(f"ctx={ctx} but parameters of {type(net).__name__} live on "
                         f"{', '.join(elsewhere)}; pass one of those or leave ctx=None")
    return ctx


def _listing(names: list, limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _size(p: gluon.Parameter) -> Optional[int]:
    """Number of scalars in p, or None while its shape is unknown (0/-1 dims)."""
    if p.shape is None or any(d <= 0 for d in p.shape):
        return None
    return math.prod(int(d) for d in p.shape)


def _flatten(out) -> list:
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flatten(o)]
    return [out] if isinstance(out, mx.nd.NDArray) else []


def _shape_of(out) -> Optional[tuple]:
    if isinstance(out, (list, tuple)):
        return tuple(_shape_of(o) for o in out)
    return tuple(int(d) for d in out.shape) if hasattr(out, "shape") else None


def _shape_to_list(shape):
    if isinstance(shape, tuple):
        return [_shape_to_list(s) for s in shape]
    return shape


def _short_error(e: BaseException) -> str:
    """The informative line of an MXNet error (its message starts with a C++ traceback)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    useful = [ln for ln in lines if "Check failed" in ln] or lines[-1:]
    return useful[-1][:400]
