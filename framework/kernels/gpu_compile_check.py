"""Compile Triton kernels for a real GPU while they run in the CPU interpreter — no GPU needed.

Triton's interpreter (``TRITON_INTERPRET=1``) executes a kernel's Python body with numpy and accepts code that the
GPU compiler rejects: on 2026-12-06 every kernel of the squeezed split decode path passed its CPU tests and then
failed to compile on an H100 (a ``@triton.jit`` helper with a defaulted ``tl.constexpr`` argument). A GPU minute is
scarce; ``ptxas`` is not — it ships inside the Triton wheel. With :func:`install`, every interpreted launch is also
compiled by the real NVIDIA backend (Triton IR → PTX → cubin) for the chosen architecture, with the launch's own
argument types, alignments and constexprs, and then executed by the interpreter as before; a compile error is raised
at the launch that caused it, naming the kernel.

Usage (the Makefile's ``gpu-compile-check`` target)::

    FRAMEWORK_TRITON_COMPILE_ARCH=90 python -m pytest tests/framework/kernels

A specialization that needs more shared memory per block than the architecture allows (which Triton reports only at
launch) is refused too. What this cannot see: run-time faults on a GPU (out-of-bounds addresses, races), register
spills, and speed; and only the specializations the CPU tests launch are compiled (their shapes are small: a block size
chosen from a GPU-sized head dimension may differ).
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field

ENV = "FRAMEWORK_TRITON_COMPILE_ARCH"
# Shared memory one block may use (bytes, opt-in maximum), by compute capability; Triton checks it only at launch.
SHARED_LIMIT = {70: 98_304, 75: 65_536, 80: 166_912, 86: 101_376, 87: 166_912, 89: 101_376, 90: 232_448}


@dataclass
class CompileLog:
    """What was compiled: ``{kernel qualname: number of distinct specializations}`` and their shared memory."""

    arch: int
    kernels: dict[str, int] = field(default_factory=dict)
    max_shared: dict[str, int] = field(default_factory=dict)  # bytes per block, largest specialization


_LOG: CompileLog | None = None


class _TargetOnlyDriver:
    """Stands in for the CUDA driver: it names a target and a device but launches nothing."""

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int = 0) -> int:
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


def _as_jit(interpreted, made: dict):
    """A ``JITFunction`` over the same Python function, with every interpreted helper it calls swapped likewise."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    fn = interpreted.fn
    if fn in made:
        return made[fn]
    scope = dict(fn.__globals__)
    clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__, clone.__module__ = fn.__qualname__, fn.__module__
    clone.__annotations__, clone.__kwdefaults__, clone.__doc__ = fn.__annotations__, fn.__kwdefaults__, fn.__doc__
    clone.__wrapped__ = fn  # inspect.getsource finds the original's source
    options = {k: v for k, v in interpreted.kwargs.items() if k in
               ("version", "do_not_specialize", "do_not_specialize_on_alignment", "debug", "noinline", "repr",
                "launch_metadata")}
    jit = JITFunction(clone, **options)
    made[fn] = jit
    for name, value in list(scope.items()):
        if isinstance(value, InterpretedFunction):
            scope[name] = _as_jit(value, made)
    return jit


def _language_swaps(made: dict) -> list[tuple[object, str, object, object]]:
    """``(owner, name, interpreted, jit)`` for triton.language's own ``@jit`` functions (``tl.cdiv``, ``tl.sum``,
    tensor methods ...): under ``TRITON_INTERPRET=1`` they were decorated as interpreted functions too, and the
    compiler must see compiled ones."""
    import sys

    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    owners = [m for n, m in list(sys.modules.items()) if m is not None and
              (n == "triton.language" or n.startswith("triton.language."))] + [tl.core.tensor]
    swaps = []
    for owner in owners:
        for name, value in list(vars(owner).items()):
            if isinstance(value, InterpretedFunction):
                swaps.append((owner, name, value, _as_jit(value, made)))
    return swaps


def install(arch: int) -> CompileLog:
    """Make every interpreted Triton launch in this process compile for ``sm_<arch>`` first. Idempotent."""
    global _LOG
    if _LOG is not None:
        if _LOG.arch != arch:
            raise ValueError(f"compile check already installed for sm_{_LOG.arch}, asked for sm_{arch}")
        return _LOG
    if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "on", "yes"):
        raise ValueError("the compile check runs beside the interpreter: set TRITON_INTERPRET=1 before importing "
                         "triton")
    from triton.runtime import driver
    from triton.runtime import interpreter
    from triton.runtime.interpreter import InterpretedFunction, InterpreterError

    driver.set_active(_TargetOnlyDriver(arch))
    made: dict = {}
    swaps = _language_swaps(made)
    log = CompileLog(arch)
    interpreted_run = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        jit = _as_jit(self, made)
        before = len(jit.device_caches[0][0])
        for owner, name, _, compiled in swaps:
            setattr(owner, name, compiled)
        try:  # compiles (or finds) this specialization; launches nothing
            kernel = jit.run(*args, grid=grid, warmup=True, **kwargs)
        finally:
            for owner, name, interpreted, _ in swaps:
                setattr(owner, name, interpreted)
        name = f"{self.fn.__module__}.{self.fn.__qualname__}"
        shared, limit = kernel.metadata.shared, SHARED_LIMIT.get(arch)
        if limit is not None and shared > limit:
            raise RuntimeError(f"{name} needs {shared} bytes of shared memory per block; sm_{arch} allows {limit}: "
                               "it would fail at launch on the GPU (smaller blocks or fewer stages)")
        log.max_shared[name] = max(log.max_shared.get(name, 0), shared)
        log.kernels[name] = log.kernels.get(name, 0) + (len(jit.device_caches[0][0]) - before)
        return interpreted_run(self, *args, grid=grid, warmup=warmup, **kwargs)

    def call(self, *args, **kwargs):
        # The interpreter's device-function call patches triton.language for numpy and never restores it (Triton
        # 3.6-3.9); the compiler, which runs next, needs the real language back once the kernel has finished.
        scope = interpreter._patch_lang(self.fn)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise InterpreterError(repr(e)) from e
        finally:
            scope.restore()

    InterpretedFunction.run = run
    InterpretedFunction.__call__ = call
    _index_shim(interpreter)
    _LOG = log
    return log


def _index_shim(interpreter) -> None:
    """Older interpreters (Triton 3.6, the GPU image's) turn a scalar into an index with ``int(array)``, which NumPy
    >= 2.3 refuses for the shape-(1,) arrays they hold; the check runs those interpreters too, so index through
    ``.item()`` (same value)."""
    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]) if
                       self.handle.data.size == 1 else int(self.handle.data))

    interpreter._patch_lang_tensor = patched


def installed() -> CompileLog | None:
    return _LOG


def install_from_env() -> CompileLog | None:
    """``install(int(os.environ[ENV]))`` when the variable is set (conftest calls this before any kernel import)."""
    value = os.environ.get(ENV)
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{ENV}={value!r}: expected a CUDA compute capability as digits, e.g. 90 (H100/H200) or 80")
    return install(int(value))
