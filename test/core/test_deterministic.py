"""The deterministic weight rule draws the fixtures' numbers on every CPU.

PyTorch's scalar ``randn`` (``ATEN_CPU_CAPABILITY=default``, non-x86) differs in the last
bit from the vectorised one the fixtures were drawn with; ``standard_normal`` reproduces
the vectorised sampler in NumPy there. The emulation itself is checked here against
``torch.randn`` in a child process forced onto the vectorised kernels when this CPU has
them, and against the fixtures' weight sums everywhere (test_*_parity.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vggts_ros.models.deterministic as det

SIZES = (16, 17, 31, 100, 3 * 14 * 14 * 64, 100_003)


def _vectorised_draws(seed: int) -> np.ndarray:
    """``torch.randn`` draws of SIZES in one generator stream, by the vectorised kernels."""
    code = (
        "import sys, numpy as np, torch\n"
        "assert torch.backends.cpu.get_cpu_capability().upper() in ('AVX2', 'AVX512'), "
        "torch.backends.cpu.get_cpu_capability()\n"
        f"g = torch.Generator().manual_seed({seed})\n"
        f"v = [torch.randn(n, generator=g).numpy() for n in {SIZES!r}]\n"
        "v.append(torch.rand(4, generator=g).numpy())\n"
        "sys.stdout.buffer.write(np.concatenate(v).astype('<f4').tobytes())\n"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"this CPU cannot run PyTorch's AVX2 kernels: {proc.stderr.decode()[-300:]}")
    return np.frombuffer(proc.stdout, dtype="<f4")


@pytest.mark.parametrize("seed", [0, 12345])
def test_emulated_sampler_is_bit_identical(seed, monkeypatch):
    expected = _vectorised_draws(seed)
    monkeypatch.setattr(det, "_vectorised_kernels", lambda: False)  # force the emulation
    g = torch.Generator().manual_seed(seed)
    got = [det.standard_normal((n,), g).numpy() for n in SIZES]
    got.append(torch.rand(4, generator=g).numpy())  # the stream is consumed as randn does
    got = np.concatenate(got)
    assert got.shape == expected.shape
    bad = np.flatnonzero(got.view(np.int32) != expected.view(np.int32))
    assert bad.size == 0, f"{bad.size} of {got.size} draws differ, first at {bad[:5]}: {got[bad[:5]]} vs {expected[bad[:5]]}"


def test_shapes_and_small_tensors(monkeypatch):
    monkeypatch.setattr(det, "_vectorised_kernels", lambda: False)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    small = det.standard_normal((3, 5), g1)  # below 16 values: torch's own (ISA-independent) path
    assert torch.equal(small, torch.randn((3, 5), generator=g2))
    big = det.standard_normal((4, 3, 7), g1)
    assert big.shape == (4, 3, 7) and big.dtype == torch.float32
    assert abs(float(big.mean())) < 0.5 and 0.5 < float(big.std()) < 1.5
