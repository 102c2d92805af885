"""A faster Triton interpreter for the tests: scans and reductions with a custom combine function.

Triton's interpreter runs ``tl.associative_scan`` / ``tl.reduce`` with a user combine function one element
at a time in Python (~30 us per element), which makes a model-sized scan tile take minutes. These
replacements apply the same combine function in the same order (element 0, then 1, ... along the axis)
to whole slices at once, so the results are the same and only the Python loop is shorter. The kernels
and the GPU path are untouched; this only changes how the CPU interpreter evaluates them.
"""
from __future__ import annotations

import numpy as np


def _combine(op, acc, cur):
    ret = op.combine_fn.fn(*acc, *cur)
    return ret if isinstance(ret, tuple) else (ret,)


def _slice(op, data, index, dtype):
    return op.to_tensor(np.ascontiguousarray(data[index]), dtype)


def _scan(self, input):
    axis = self.axis
    datas = [arg.handle.data for arg in input]
    outs = [np.empty_like(d) for d in datas]
    acc = None
    for i in range(datas[0].shape[axis]):
        index = (slice(None),) * axis + (i,)
        cur = tuple(_slice(self, d, index, arg.dtype) for d, arg in zip(datas, input))
        acc = cur if acc is None else _combine(self, acc, cur)
        for o, a in zip(outs, acc):
            o[index] = np.reshape(a.handle.data, o[index].shape)
    return [self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input)]


def _reduce(self, input):
    original_axis = self.axis
    input, axis = self.unravel(input, self.axis)
    datas = [arg.handle.data for arg in input]
    acc = None
    for i in range(datas[0].shape[axis]):
        index = (slice(None),) * axis + (i,)
        cur = tuple(_slice(self, d, index, arg.dtype) for d, arg in zip(datas, input))
        acc = cur if acc is None else _combine(self, acc, cur)
    out_shape = datas[0].shape[:axis] + datas[0].shape[axis + 1:]
    ret = []
    for a, arg in zip(acc, input):
        data = np.reshape(a.handle.data, out_shape)
        if self.keep_dims:
            data = np.expand_dims(data, axis) if original_axis is not None else data.reshape((1,) * len(datas[0].shape))
        elif original_axis is None:
            data = data.item()
        ret.append(self.to_tensor(data, arg.dtype))
    return ret


def install() -> bool:
    """Patch the interpreter (when Triton is installed); True when patched."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    interpreter.ScanOps.generic_scan = _scan
    interpreter.ReduceOps.generic_reduce = _reduce
    return True
