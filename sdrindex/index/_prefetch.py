"""A software prefetch of one row of a 2-D array, for kernels that hop between random rows.

A graph search scores the neighbours of a vertex: rows scattered over an array far larger
than the caches (1M SDRs of 6,241 bits = 784 MB), each several cache lines long. The
hardware prefetcher cannot guess the next row, so each row costs a full memory latency;
asking for row j + 2 while row j is scored overlaps those latencies (hnswlib does the
same). Measured on random rows of a (1M, 98) uint64 array, 2 cores (2026-11-30): ~570 ns
per row plain, ~200 ns with the row two ahead prefetched.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["prefetch_row"]


@intrinsic
def prefetch_row(typingctx, arr, i):
    """Prefetch (read, keep in all cache levels) every 64-byte line of row i of C array arr.

    A hint only: no effect on results, no fault on any address.
    """
    if not isinstance(arr, types.Array) or arr.ndim != 2 or arr.layout != "C":
        return None
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        aty, ity = signature.args
        ary = context.make_array(aty)(context, builder, args[0])
        row = context.cast(builder, args[1], ity, types.intp)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [row, zero])
        base = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        width = builder.extract_value(ary.shape, 1)
        n_bytes = builder.mul(width, context.get_constant(types.intp, aty.dtype.bitwidth // 8))
        step = context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, zero, n_bytes, step) as (offset, _):
            line = builder.gep(base, [offset])
            # rw 0 = read, locality 3 = keep in every level, cache type 1 = data
            builder.call(fn, [line, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
