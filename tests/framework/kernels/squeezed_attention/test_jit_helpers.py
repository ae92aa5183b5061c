"""Static check of a Triton rule the CPU interpreter does not enforce: a ``@triton.jit`` helper called from another
kernel gets its arguments at compile time, and on GPU Triton (3.6) a default value of a ``tl.constexpr`` parameter
is passed as a plain Python object (``'str' object has no attribute 'type'`` at compile time). Only launched kernels
(``*_kernel``) may have defaults; helpers take every argument explicitly."""

import ast
from pathlib import Path

import framework.kernels

KERNELS_DIR = Path(framework.kernels.__file__).parent


def jit_functions():
    for path in sorted(KERNELS_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
                yield path.name, node


def test_there_are_jit_helpers_to_check():
    names = [node.name for _, node in jit_functions()]
    assert "_row_log_z" in names and sum(not n.endswith("_kernel") for n in names) >= 5


def test_jit_helpers_have_no_default_arguments():
    offenders = [f"{file}:{node.name}" for file, node in jit_functions()
                 if not node.name.endswith("_kernel")
                 and (node.args.defaults or any(d is not None for d in node.args.kw_defaults))]
    assert offenders == [], f"@triton.jit helpers with default arguments (fail to compile on GPU): {offenders}"
