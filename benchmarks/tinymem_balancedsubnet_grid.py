"""BalancedSubnet hyper-parameter grid on the TinyMem backdoor model (paper settings), beyond the paper's epochs grid.

    python benchmarks/tinymem_balancedsubnet_grid.py --grid 1:0.05:0.01:0.1 2:0.25:0.01:0.1 [--device cpu] [--out ...]

Each grid point is ``epochs:alpha:ratio:lr`` (α = loss weighting of the clean term). The base model is the one
``benchmarks/tinymem_mitigation.py`` trains and caches under ``outputs/tinymem/benchmark/`` (full settings); this
script refuses to train one. Every point starts from the same base weights and data, with the same clean pool as the
mitigation table (all extra sequences, memorized rows excluded) and reports backdoor success and accuracy after, the
accuracy drop and the time, so the target (≤ 1 % backdoor success with ≤ 1 point accuracy drop) can be checked per point.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from benchmarks.tinymem_mitigation import FULL, base_model_path, make_datamodule, measure  # noqa: E402
from framework.models.components.tinymem import unlearning as U  # noqa: E402
from framework.models.components.tinymem.gpt2 import load_tinymem_gpt2  # noqa: E402
from framework.models.tinymem_unlearning import memorized_subset  # noqa: E402


def parse_point(text: str) -> dict:
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"grid point {text!r} must be epochs:alpha:ratio:lr, e.g. 1:0.05:0.01:0.1")
    try:
        epochs, alpha, ratio, lr = int(parts[0]), float(parts[1]), float(parts[2]), float(parts[3])
    except ValueError:
        raise ValueError(f"grid point {text!r}: epochs must be an integer and alpha, ratio, lr numbers") from None
    if epochs <= 0 or not 0.0 <= alpha <= 1.0 or not 0.0 < ratio < 1.0 or lr <= 0:
        raise ValueError(f"grid point {text!r}: need epochs > 0, alpha in [0, 1], ratio in (0, 1), lr > 0")
    return {"epochs": epochs, "alpha": alpha, "ratio": ratio, "lr": lr}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", required=True, help="points epochs:alpha:ratio:lr")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        points = [parse_point(p) for p in args.grid]
    except ValueError as err:
        parser.error(str(err))
    path = base_model_path("full", FULL, args.seed)
    if not (path / "config.json").exists():
        parser.error(f"no trained base model at {path}: run benchmarks/tinymem_mitigation.py (full settings) "
                     f"first; this script does not train one")
    dm = make_datamodule(FULL, args.seed)
    base = load_tinymem_gpt2(path).to(args.device)
    before = measure(base, dm)
    memorized = dm.memorized_sequences[memorized_subset(base, dm)]
    data = U.UnlearningData(memorized=memorized, clean=dm.extra_sequences, prompt_len=dm.prompt_len)
    print(f"base {before}; memorized {len(memorized)}, clean pool {len(dm.extra_sequences)}", flush=True)
    rows = []
    for point in points:
        model = copy.deepcopy(base)
        method = U.BalancedSubnet(ratio=point["ratio"], epochs=point["epochs"], lr=point["lr"],
                                  loss_weighting=point["alpha"], seed=args.seed)
        result = method(model, data)
        after = measure(model, dm)
        drop = before["accuracy"] - after["accuracy"]
        rows.append({**point, "backdoor_before": before["backdoor"], "backdoor_after": after["backdoor"],
                     "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"], "accuracy_drop": drop,
                     "target_met": after["backdoor"] <= 1.0 and drop <= 1.0, "seconds": result.seconds})
        print(markdown_table([rows[-1]]).splitlines()[-1], flush=True)
        write_results(args.out, name="tinymem_balancedsubnet_grid", rows=rows, base=str(path), device=args.device)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
