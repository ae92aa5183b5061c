"""CompileModules: validates its arguments and compiles the named sub-modules in place (state-dict keys unchanged)."""

from __future__ import annotations

import pytest
from torch import nn

from framework.callbacks.compile_modules import CompileModules


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        self.scale = 2.0


@pytest.mark.parametrize("kwargs, match", [({"modules": []}, "modules"), ({"modules": ["body"], "mode": "fast"}, "mode"),
                                           ({"modules": [""]}, "modules")])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompileModules(**kwargs)


def test_compiles_in_place_and_names_missing_modules():
    holder = _Holder()
    keys = list(holder.state_dict())
    CompileModules(modules=["body"]).setup(None, holder, "fit")
    assert holder.body._compiled_call_impl is not None and list(holder.state_dict()) == keys
    with pytest.raises(ValueError, match="no sub-module 'head'"):
        CompileModules(modules=["head"]).setup(None, holder, "fit")
    with pytest.raises(ValueError, match="not an nn.Module"):
        CompileModules(modules=["scale"]).setup(None, holder, "fit")
