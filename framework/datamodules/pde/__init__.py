"""Local trajectory generators for spatio-temporal forecasting and a PDEBench file reader, one system per file.

Each ``simulate_*`` returns ``[N, T, C, H, W]`` float32 trajectories (N independent initial states)."""

from framework.datamodules.pde.diffusion_reaction import simulate_diffusion_reaction
from framework.datamodules.pde.kuramoto_sivashinsky import simulate_kuramoto_sivashinsky
from framework.datamodules.pde.linear_ar1 import ar1_optimal_forecast, simulate_linear_ar1
from framework.datamodules.pde.navier_stokes import simulate_navier_stokes
from framework.datamodules.pde.pdebench_loader import load_pdebench, pdebench_layout
from framework.datamodules.pde.shallow_water import simulate_shallow_water

__all__ = [
    "ar1_optimal_forecast",
    "load_pdebench",
    "pdebench_layout",
    "simulate_diffusion_reaction",
    "simulate_kuramoto_sivashinsky",
    "simulate_linear_ar1",
    "simulate_navier_stokes",
    "simulate_shallow_water",
]
