"""The Triton kernels compile to GPU machine code (cubin) for Ampere and Hopper, with no GPU.

The interpreter (TRITON_INTERPRET=1, which conftest sets on machines without a GPU) checks the math on
CPU but is lenient about types; compiling for a real target catches what would only fail on a GPU.
Compilation runs in a subprocess without the interpreter switch.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, sys, triton
from triton.backends.compiler import GPUTarget
from videomamba.ops import causal_conv1d_triton as V, selective_scan_triton as S

HALF = ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "add_ptr", "du_ptr", "ddelta_ptr", "dz_ptr",
        "out_ptr", "ub_ptr", "deltab_ptr", "Bb_ptr", "Cb_ptr", "x_ptr", "y_ptr", "dy_ptr", "dx_ptr")

def compile_kernel(kernel, constexprs, arch, half=None):
    sig = {p.name: "constexpr" if p.is_constexpr else
           ((f"*{half}" if half and p.name in HALF else "*fp32") if p.name.endswith("_ptr") else "i32")
           for p in kernel.params}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return len(triton.compile(src, target=GPUTarget("cuda", arch, 32)).asm["cubin"])

results = {}
shape = dict(BLOCK_D=8, BLOCK_N=16, T=S.CHUNK)
# every flag on: Ampere fp32 and Hopper bf16; every flag off: Hopper fp32
for on, targets in ((True, ((80, None), (90, "bf16"))), (False, ((90, None),))):
    flags = dict(HAS_BIAS=on, SOFTPLUS=on, REVERSE=on)
    for arch, half in targets:
        tag = f"{on}-sm{arch}-{half or 'fp32'}"
        results[f"summary-{tag}"] = compile_kernel(S._chunk_summary_kernel, dict(flags, ADJOINT=on, HAS_Z=on, **shape),
                                                   arch, half)
        results[f"output-{tag}"] = compile_kernel(S._chunk_output_kernel, dict(flags, HAS_D=on, HAS_Z=on,
                                                                               HAS_ADD=on, **shape), arch, half)
        results[f"pair-{tag}"] = compile_kernel(S._pair_output_kernel, dict(
            HAS_D=on, HAS_Z=on, HAS_BIAS=on, SOFTPLUS=on, DIVIDE=on, **shape), arch, half)
        results[f"backward-{tag}"] = compile_kernel(S._chunk_backward_kernel, dict(
            flags, HAS_D=on, HAS_Z=on, HAS_OUT=on, CHANNELS=32, **dict(shape, BLOCK_D=4)), arch, half)
results["carry"] = compile_kernel(S._carry_kernel, dict(FORWARD=True, ADJOINT=True, HAS_H0=True, HAS_DLAST=True,
                                                      BLOCK=128, GROUP=16), 90)
for on, arch, half in ((True, 90, "bf16"), (False, 90, None)):   # the conv: weights and partial sums stay fp32
    flags = dict(K=4, HAS_BIAS=on, SILU=on, REVERSE=on, BLOCK_C=16, BLOCK_L=128)
    results[f"conv-fwd-{on}"] = compile_kernel(V._conv_fwd_kernel, flags, arch, half)
    results[f"conv-bwd-{on}"] = compile_kernel(V._conv_bwd_kernel, flags, arch, half)
V._tuned("fwd"), V._tuned("bwd")   # the autotuners build outside the interpreter
print(json.dumps(results))
"""


def test_kernels_compile_for_ampere_and_hopper():
    """Scan (summary, carry, output, pair, backward) and conv kernels, with their flags on and off."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    sizes = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(sizes) == 17 and all(n > 1000 for n in sizes.values()), sizes
