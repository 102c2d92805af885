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
from videomamba.ops import selective_scan_triton as S

def compile_kernel(kernel, constexprs, arch):
    sig = {p.name: "constexpr" if p.is_constexpr else ("*fp32" if p.name.endswith("_ptr") else "i32")
           for p in kernel.params}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return len(triton.compile(src, target=GPUTarget("cuda", arch, 32)).asm["cubin"])

results = {}
for on in (True, False):
    flags = dict(HAS_D=on, HAS_Z=on, HAS_BIAS=on, SOFTPLUS=on)
    for arch in (80, 90):
        results[f"fwd-{on}-sm{arch}"] = compile_kernel(S._scan_fwd_kernel, dict(flags, BLOCK_D=64, BLOCK_N=16), arch)
    results[f"bwd-{on}-sm90"] = compile_kernel(
        S._scan_bwd_kernel, dict(flags, HAS_DLAST=on, BLOCK_D=64, BLOCK_N=16, CHUNK_L=S.CHUNK), 90)
print(json.dumps(results))
"""


def test_kernels_compile_for_ampere_and_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    sizes = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(sizes) == 6 and all(n > 1000 for n in sizes.values()), sizes
