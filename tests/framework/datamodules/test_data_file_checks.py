"""Every DataModule that reads user files checks them when it is constructed, before a logger opens a run; through
the CLI that is one ``error:`` line naming the file and no W&B run (issue 19, problem 4)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from framework.datamodules.constrained_logistic import ConstrainedLogisticDataModule
from framework.datamodules.ground_motion import GroundMotionCatalog
from framework.datamodules.m5_sales import M5Sales
from framework.datamodules.pde_trajectories import PDETrajectories
from tests.framework.datamodules.test_m5_sales import write_m5

M5_FILES = ("sales_train_evaluation.csv", "calendar.csv", "sell_prices.csv")
META = {"source_latitude": 37.9, "source_longitude": -122.1, "station_latitude": 37.8, "station_longitude": -122.3,
        "depth": 9.0, "magnitude": 3.1}


def _m5(root):
    return M5Sales(data_dir=str(root), context_length=28, horizon=7, val_days=14, test_days=14, batch_size=2)


# ---------------------------------------------------------------------------------------------------- M5
@pytest.mark.parametrize("name", M5_FILES)
def test_m5_empty_file(tmp_path, name):
    write_m5(tmp_path)
    (tmp_path / name).write_text("")
    with pytest.raises(ValueError, match=f"{name}.* is empty"):
        _m5(tmp_path)


@pytest.mark.parametrize("name", M5_FILES)
def test_m5_header_only_file(tmp_path, name):
    write_m5(tmp_path)
    header = (tmp_path / name).read_text().splitlines()[0]
    (tmp_path / name).write_text(header + "\n")
    with pytest.raises(ValueError, match=f"{name}.* 0 data row"):
        _m5(tmp_path)


@pytest.mark.parametrize(("name", "column"), [("sales_train_evaluation.csv", "state_id"),
                                              ("calendar.csv", "snap_TX"), ("sell_prices.csv", "sell_price")])
def test_m5_missing_column(tmp_path, name, column):
    write_m5(tmp_path)
    lines = (tmp_path / name).read_text().splitlines()
    (tmp_path / name).write_text("\n".join([lines[0].replace(column, "renamed"), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=f"{name}.* lacks the columns \\['{column}'\\]"):
        _m5(tmp_path)


def test_m5_binary_file(tmp_path):
    write_m5(tmp_path)
    (tmp_path / "calendar.csv").write_bytes(bytes(range(128, 256)) * 8)
    with pytest.raises(ValueError, match="calendar.csv.* not a readable CSV"):
        _m5(tmp_path)


# ---------------------------------------------------------------------------------------------------- PDEBench
def _pdebench(path, **options):
    return PDETrajectories(system="pdebench", pdebench_path=str(path), num_trajectories=5, val_trajectories=1,
                           test_trajectories=1, window_length=4, context_length=2, horizon=3, batch_size=2,
                           system_options=options or None)


def _write_h5(path):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("velocity", data=np.zeros((5, 10, 8, 8, 2), np.float32))


@pytest.mark.parametrize(("content", "needle"), [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("not hdf5\n" * 100), "not an HDF5 file"),
    (lambda p: (_write_h5(p), p.write_bytes(p.read_bytes()[:3000])), "cannot be read as HDF5"),
], ids=["empty", "text", "truncated"])
def test_pdebench_bad_file(tmp_path, content, needle):
    path = tmp_path / "2D_data.h5"
    content(path)
    with pytest.raises(ValueError, match=needle) as info:
        _pdebench(path)
    assert str(path) in str(info.value)


def test_pdebench_unknown_field(tmp_path):
    _write_h5(tmp_path / "ns.h5")
    with pytest.raises(ValueError, match="fields \\['density'\\] are not in .*available: \\['velocity'\\]"):
        _pdebench(tmp_path / "ns.h5", fields=["density"])
    assert _pdebench(tmp_path / "ns.h5", fields=["velocity"]).system == "pdebench"


# ---------------------------------------------------------------------------------------------------- ObsPy / CSV records
def _write_obspy(root, *, broken: str | None = None):
    obspy = pytest.importorskip("obspy")
    rows = []
    for i in range(2):
        name = f"rec{i}.mseed"
        trace = obspy.Trace(data=np.random.default_rng(i).standard_normal(6000))
        trace.stats.sampling_rate = 100.0
        trace.write(str(root / name), format="MSEED")
        rows.append({"path": name, "event_id": i, **META})
    if broken == "unreadable":
        (root / "rec1.mseed").write_bytes(b"\x00garbage" * 50)
    elif broken == "empty":
        (root / "rec1.mseed").write_bytes(b"")
    elif broken == "missing":
        (root / "rec1.mseed").unlink()
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "meta.csv"


def _obspy_catalog(path):
    return GroundMotionCatalog(source="obspy", records_path=str(path))


@pytest.mark.parametrize(("broken", "error", "needle"), [
    ("unreadable", ValueError, "record rec1.mseed: ObsPy cannot read"),
    ("empty", ValueError, "rec1.mseed.* is empty"),
    ("missing", FileNotFoundError, "rec1.mseed"),
])
def test_obspy_bad_record(tmp_path, broken, error, needle):
    meta = _write_obspy(tmp_path, broken=broken)
    with pytest.raises(error, match=needle):
        _obspy_catalog(meta)


def test_obspy_metadata_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.csv"):
        _obspy_catalog(tmp_path / "meta.csv")
    meta = _write_obspy(tmp_path)
    assert _obspy_catalog(meta).source == "obspy"
    lines = meta.read_text().splitlines()
    meta.write_text("")
    with pytest.raises(ValueError, match="meta.csv.* is empty"):
        _obspy_catalog(meta)
    meta.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match="meta.csv.* 0 data row"):
        _obspy_catalog(meta)
    meta.write_text("\n".join([lines[0].replace("magnitude", "mag"), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="lacks the columns \\['magnitude'\\]"):
        _obspy_catalog(meta)


def test_cgm_gm_csv_records_checked_at_construction(tmp_path):
    path = tmp_path / "records.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="records.csv.* is empty"):
        GroundMotionCatalog(source="csv", records_path=str(path))
    path.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="line 1 has 3 columns"):
        GroundMotionCatalog(source="csv", records_path=str(path))


# ---------------------------------------------------------------------------------------------------- LIBSVM
def test_libsvm_empty_file(tmp_path):
    (tmp_path / "empty.libsvm").write_text("")
    with pytest.raises(ValueError, match="empty.libsvm.* is empty"):
        ConstrainedLogisticDataModule(libsvm_path=str(tmp_path / "empty.libsvm"))


# ---------------------------------------------------------------------------------------------------- image folders
def _image_classes(root, classes=("cat", "dog"), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _image_datamodules():
    from framework.datamodules.digits_classification import DigitsClassification
    from framework.datamodules.sequential_images import SequentialImages
    from framework.datamodules.stripe_denoising import StripeDenoising

    return {"digits": lambda folder: DigitsClassification(image_folder=str(folder), num_classes=2),
            "sequential": lambda folder: SequentialImages(image_folder=str(folder)),
            "stripe": lambda folder: StripeDenoising(image_folder=str(folder))}


@pytest.mark.parametrize("module", ["digits", "sequential", "stripe"])
@pytest.mark.parametrize(("breakage", "needle"), [
    (lambda f: (f / "dog" / "1.png").write_bytes(b"not a png at all"), "1.png.* is not a readable image"),
    (lambda f: (f / "dog" / "2.png").write_bytes(b""), "2.png.* is empty"),
], ids=["garbled", "empty"])
def test_image_folder_bad_image(tmp_path, module, breakage, needle):
    folder = _image_classes(tmp_path / "imgs")
    _image_datamodules()[module](folder)  # a good folder is accepted
    breakage(folder)
    with pytest.raises(ValueError, match=needle):
        _image_datamodules()[module](folder)


@pytest.mark.parametrize("module", ["digits", "sequential"])
def test_image_folder_needs_two_classes(tmp_path, module):
    folder = _image_classes(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(ValueError, match="at least 2 classes"):
        _image_datamodules()[module](folder)


def test_stripe_image_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        _image_datamodules()["stripe"](tmp_path)


# ---------------------------------------------------------------------------------------------------- through the CLI
def _config_with_data(repo_root, tmp_path, config: str, data: dict) -> str:
    text = yaml.safe_load((repo_root / config).read_text())
    text["data"] = data
    text["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "outputs")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(text))
    return str(path)


def _cli_cases(tmp_path):
    m5 = tmp_path / "m5"
    m5.mkdir()
    write_m5(m5)
    (m5 / "sales_train_evaluation.csv").write_text("")
    (tmp_path / "empty.h5").write_bytes(b"")
    obspy_dir = tmp_path / "obspy"
    obspy_dir.mkdir()
    return {
        "m5_empty_sales": ("configs/spade/retail_mq_cnn.yaml",
                           {"class_path": "framework.datamodules.m5_sales.M5Sales",
                            "init_args": {"data_dir": str(m5), "context_length": 28, "horizon": 7, "val_days": 14,
                                          "test_days": 14}}, "sales_train_evaluation.csv"),
        "pdebench_empty_h5": ("configs/flow_matching/ae_navier_stokes.yaml",
                              {"class_path": "framework.datamodules.pde_trajectories.PDETrajectories",
                               "init_args": {"system": "pdebench", "pdebench_path": str(tmp_path / "empty.h5")}},
                              "empty.h5"),
        "obspy_missing_metadata": ("configs/cgm_gm/sfba_synthetic.yaml",
                                   {"class_path": "framework.datamodules.ground_motion.GroundMotionCatalog",
                                    "init_args": {"source": "obspy", "records_path": str(obspy_dir / "meta.csv")}},
                                   "meta.csv"),
    }


@pytest.mark.parametrize("case", ["m5_empty_sales", "pdebench_empty_h5", "obspy_missing_metadata",
                                  "obspy_unreadable_record"])
def test_cli_bad_data_file_is_one_error_and_no_wandb_run(case, repo_root, run_cli, capsys, tmp_path, monkeypatch):
    cases = _cli_cases(tmp_path)
    if case == "obspy_unreadable_record":
        meta = _write_obspy(tmp_path / "obspy", broken="unreadable")
        config, data, needle = cases["obspy_missing_metadata"]
        data["init_args"]["records_path"] = str(meta)
        needle = "rec1.mseed"
    else:
        config, data, needle = cases[case]
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", _config_with_data(repo_root, tmp_path, config, data), "--trainer.max_epochs=1")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and needle in err and "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*run-*")), "no W&B run may be created"
