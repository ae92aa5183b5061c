import pytest

from framework.validation import (
    require_choice,
    require_existing_path,
    require_in_range,
    require_non_negative,
    require_positive,
    require_probability,
)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "3", True])
def test_require_positive_rejects(value):
    with pytest.raises(ValueError, match="lr"):
        require_positive("lr", value)


def test_accepting_values_pass(tmp_path):
    require_positive("x", 1e-9)
    require_non_negative("x", 0)
    require_probability("p", 0.0)
    require_probability("p", 1.0)
    require_in_range("b", 1.0, 0.0, 1.0, low_inclusive=False)
    require_choice("c", "a", ["a", "b"])
    assert require_existing_path("f", tmp_path, kind="dir") == tmp_path


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_probability_message_names_value_and_interval(value):
    with pytest.raises(ValueError, match=r"dropout must lie in \[0.0, 1.0\]"):
        require_probability("dropout", value)


def test_open_interval():
    with pytest.raises(ValueError, match=r"\(0.0, 1.0\]"):
        require_in_range("budget", 0.0, 0.0, 1.0, low_inclusive=False)


def test_choice_lists_allowed():
    with pytest.raises(ValueError, match=r"\['euler', 'heun'\]"):
        require_choice("solver", "rk9", ["heun", "euler"])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        require_existing_path("data_dir", tmp_path / "nope", kind="dir")
