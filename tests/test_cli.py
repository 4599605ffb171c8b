"""The command line end to end, with real files the tests write: models, data, artifacts, bad input."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from snnconv.errors import GateFailed
from snnconv.workflows import Gates, check_gates
from snnconv_cli.main import app

from helpers import undefined_summary_keys

runner = CliRunner()
FAST = ["--calib-samples", "200", "--limit", "200", "-T", "8", "--quiet"]
SUMMARY_COLUMNS = ["samples", "ann_accuracy_pct", "snn_accuracy_pct", "accuracy_drop_points", "time_steps",
                   "avg_time_steps", "spikes_per_sample", "spikes_per_neuron", "neurons", "spike_values",
                   "synaptic_ops_per_sample", "macs_per_sample_snn", "zero_checks_per_sample", "macs_per_sample_ann",
                   "energy_preset",
                   "energy_pj_per_sample_snn", "energy_pj_per_sample_ann", "energy_ratio_ann_over_snn",
                   "membrane_updates_per_sample", "activation_sparsity", "exit_accuracy_pct", "avg_exit_time_steps"]

MODEL_SOURCE = '''
import torch
from torch import nn
import torch.nn.functional as F

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.avg_pool2d(F.relu(self.conv(x)), 2), 1))

def small():
    torch.manual_seed(0)
    return Small().eval()

class WithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x.flatten(1))))

def gelu():
    return WithGelu().eval()

def linear_only():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
'''


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small_models.py"
    path.write_text(MODEL_SOURCE)
    return path


@pytest.fixture(scope="module")
def default_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "default"
    result = invoke("convert", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    return out


def npz_file(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def test_convert_default_writes_artifact_and_reports(default_artifact):
    for name in ("weights.pt", "manifest.json", "reports/report.md", "reports/summary.csv", "reports/layers.csv",
                 "reports/sweep.csv"):
        assert (default_artifact / name).is_file(), name
    assert list((default_artifact / "reports").glob("*.png"))
    summary = pd.read_csv(default_artifact / "reports/summary.csv")
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert summary.loc[0, "samples"] == 200 and summary.loc[0, "time_steps"] == 8
    assert summary.loc[0, "ann_accuracy_pct"] > 80 and summary.loc[0, "spike_values"] == "binary"
    assert "Signed spikes" not in (default_artifact / "reports/report.md").read_text()
    sweep = pd.read_csv(default_artifact / "reports/sweep.csv")
    assert list(sweep["time_steps"]) == list(range(1, 9))
    manifest = json.loads((default_artifact / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["input"]["shape"] == [1, 28, 28]
    # the report and the run record the configuration as resolved for -T 8, as the network holds it
    assert manifest["run"]["convert"]["time_steps"] == 8 and manifest["run"]["convert"]["balance"]["time_steps"] == 4
    assert '"time_steps": 8' in (default_artifact / "reports/report.md").read_text()
    assert all(layer["time_steps"] == 8 for layer in manifest["layers"])
    # the automatic chunk: the VGG's largest layer is 32 x 28 x 28 float32 = 98 KiB per sample, so a batch of 256
    # holds 24.5 MiB per step, over the 16 MiB budget: one step per chunk
    assert manifest["run"]["simulation"]["chunk_steps"] == 1
    assert torch.load(default_artifact / "weights.pt", weights_only=True)


def test_evaluate_artifact_reproduces_the_curve(default_artifact, tmp_path):
    result = invoke("evaluate", default_artifact, "--report-dir", tmp_path / "rep", "--limit", "200", "--quiet",
                    "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    before = pd.read_csv(default_artifact / "reports/sweep.csv")
    after = pd.read_csv(tmp_path / "rep/sweep.csv")
    assert list(before["snn_accuracy_pct"]) == list(after["snn_accuracy_pct"])
    assert payload["summary"]["time_steps"] == 8
    assert undefined_summary_keys(payload["summary"]) == []


def test_report_dir_updates_an_earlier_report_and_refuses_a_directory_of_other_files(default_artifact, tmp_path,
                                                                                    monkeypatch):
    """A report is written only into a new, empty or earlier report directory, over its files of the same
    names; nothing else there is removed."""
    thesis = tmp_path / "mydocs"
    (thesis / "figures").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("chapter 1")
    (thesis / "summary.csv").write_text("a,b\n1,2\n")
    (thesis / "report.md").write_text("# My own report\n")  # names a report uses, but not an snnconv report
    refused = invoke("evaluate", default_artifact, "--report-dir", thesis, "--limit", "50", "--quiet")
    assert refused.exit_code == 9
    assert "--report-dir" in refused.output and "no snnconv report" in " ".join(refused.output.split())
    assert sorted(p.name for p in thesis.iterdir()) == ["figures", "report.md", "summary.csv", "thesis.tex"]
    assert (thesis / "report.md").read_text() == "# My own report\n"
    # an artifact is not a report directory either
    assert invoke("evaluate", default_artifact, "--report-dir", default_artifact, "--limit", "50",
                  "--quiet").exit_code == 9
    assert (default_artifact / "manifest.json").is_file()
    # the working directory as the report directory: written in place, and updated in place the next time,
    # keeping what else is there (a method's report beside it, the user's notes)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert invoke("evaluate", default_artifact, "--report-dir", ".", "--limit", "40", "--quiet").exit_code == 0
    (here / "notes.md").write_text("mine")
    (here / "exit_histogram.png").write_bytes(b"an earlier run's, with exits")  # this run has none: removed
    result = invoke("evaluate", default_artifact, "--report-dir", ".", "--limit", "50", "--quiet")
    assert result.exit_code == 0, result.output
    assert {"report.md", "summary.csv", "sweep.csv", "notes.md"} <= {p.name for p in here.iterdir()}
    assert pd.read_csv(here / "summary.csv")["samples"].item() == 50
    assert (here / "notes.md").read_text() == "mine"
    assert not (here / "exit_histogram.png").exists()


@pytest.mark.parametrize("gate,value,code", [("--max-acc-drop", "-20", GateFailed.GATE_EXIT_CODES["max-acc-drop"]),
                                             ("--max-avg-t", "2", GateFailed.GATE_EXIT_CODES["max-avg-t"]),
                                             ("--min-energy-ratio", "1000", GateFailed.GATE_EXIT_CODES["min-energy-ratio"])])
def test_failed_gate_names_itself_and_exits_with_its_code(default_artifact, tmp_path, gate, value, code):
    result = invoke("evaluate", default_artifact, "--report-dir", tmp_path / "r", "--limit", "100", "--quiet",
                    gate, value)
    assert result.exit_code == code
    assert gate in result.output
    passing = invoke("evaluate", default_artifact, "--report-dir", tmp_path / "r2", "--limit", "100", "--quiet",
                     "--max-acc-drop", "100", "--max-avg-t", "8")
    assert passing.exit_code == 0, passing.output


def test_a_failed_gate_still_prints_the_summary_json_a_ci_script_reads(default_artifact, tmp_path):
    run = subprocess.run([sys.executable, "-m", "snnconv", "evaluate", str(default_artifact), "--report-dir",
                          str(tmp_path / "r"), "--limit", "50", "--max-avg-t", "2", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == GateFailed.GATE_EXIT_CODES["max-avg-t"]
    assert json.loads(run.stdout)["summary"]["avg_time_steps"] == 8
    assert "Gate --max-avg-t failed" in run.stderr


def test_json_numbers_that_strict_parsers_reject_become_null():
    from snnconv_cli.render import _json_number
    assert [_json_number(v) for v in (float("nan"), float("inf"), -float("inf"), 2.5, 3)] == [None, None, None,
                                                                                              2.5, 3]
    json.loads(json.dumps({"ratio": _json_number(float("inf"))}), parse_constant=pytest.fail)


def test_the_console_summary_uses_the_units_docs_metrics_defines(default_artifact):
    """The console's rows carry the units docs/metrics.md gives their keys, and the ANN column holds only what
    the ANN has (no 'average time steps 1', a quantity defined for the SNN alone)."""
    from types import SimpleNamespace
    from rich.console import Console
    from snnconv_cli.render import summary_table
    summary = json.loads((default_artifact / "manifest.json").read_text())["summary"]
    console = Console(width=160, record=True)
    console.print(summary_table(SimpleNamespace(summary=summary, time_steps=8), "t"))
    rows = {cells[0]: cells[1:] for line in console.export_text().splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4}
    docs = (Path(__file__).parents[1] / "docs/metrics.md").read_text()
    assert rows["spikes per neuron"][2] == "spikes / neuron" and "| `spikes_per_neuron` | spikes / neuron |" in docs
    assert rows["average time steps"][0] == "" and rows["average time steps"][1] == "8.0"


def test_a_step_ratio_below_one_is_called_more_steps_not_fewer():
    from snnconv_cli.render import _fewer_steps
    assert _fewer_steps(2.844) == "2.84x fewer steps"
    assert _fewer_steps(0.88) == "1.14x more steps"


def test_a_value_equal_to_its_gate_meets_it_despite_float_rounding():
    """CI gates compare numbers computed from counts; exactly the limit must pass, one image more must not."""
    drop = 100 * 1803 / 2000 - 100 * 1801 / 2000  # exactly 0.1 points, 0.10000000000000853 in floating point
    assert drop > 0.1
    ratio = sum([0.7] * 3) / 3  # 0.6999999999999998
    assert ratio < 0.7
    summary = {"accuracy_drop_points": drop, "avg_time_steps": 0.1 + 0.2, "energy_ratio_ann_over_snn": ratio}
    check_gates(summary, Gates(max_acc_drop=0.1, max_avg_t=0.3, min_energy_ratio=0.7))
    with pytest.raises(GateFailed, match="--max-acc-drop"):
        check_gates({**summary, "accuracy_drop_points": 100 * 1803 / 2000 - 100 * 1800 / 2000}, Gates(max_acc_drop=0.1))
    with pytest.raises(GateFailed, match="--max-avg-t"):
        check_gates(summary, Gates(max_avg_t=0.2999))
    with pytest.raises(GateFailed, match="--min-energy-ratio"):
        check_gates(summary, Gates(min_energy_ratio=0.7001))


def test_onnx_model_with_npz_data(tmp_path, model_file):
    sys.path.insert(0, str(model_file.parent))
    try:
        from small_models import small
    finally:
        sys.path.remove(str(model_file.parent))
    model = small()
    onnx_path = tmp_path / "small.onnx"
    torch.onnx.export(model, (torch.rand(2, 1, 28, 28),), onnx_path, dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    rng = np.random.default_rng(0)
    data = npz_file(tmp_path / "d.npz", rng.integers(0, 255, (64, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, 64))
    out = tmp_path / "onnx-artifact"
    result = invoke("convert", onnx_path, "--data", f"npz:{data}", "-o", out, "-T", "4", "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["format"] == "onnx"
    assert manifest["source"]["import_check"]["max_abs_diff"] < 1e-4


def test_state_dict_with_arch_and_fashion_mnist_layout(tmp_path, model_file):
    sys.path.insert(0, str(model_file.parent))
    try:
        from small_models import small
    finally:
        sys.path.remove(str(model_file.parent))
    weights = tmp_path / "w.pt"
    torch.save(small().state_dict(), weights)
    raw = tmp_path / "fm" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, count in (("train", 40), ("t10k", 30)):
        images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, count) + labels.tobytes())
    out = tmp_path / "sd"
    result = invoke("convert", weights, "--arch", f"{model_file}:small", "--data", f"fashion-mnist:{tmp_path / 'fm'}",
                    "-o", out, "-T", "4", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["samples"] == 30


def test_an_artifact_finds_its_relative_data_path_from_another_directory(tmp_path, monkeypatch):
    """A data path given relative to the working directory is recorded absolute: evaluate runs from anywhere."""
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    rng = np.random.default_rng(3)
    npz_file(tmp_path / "project/d.npz", rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40))
    monkeypatch.chdir(tmp_path / "project")
    converted = invoke("convert", "--data", "npz:d.npz", "-o", tmp_path / "art", "--calib-samples", "40", "-T", "4",
                       "--quiet")
    assert converted.exit_code == 0, converted.output
    recorded = json.loads((tmp_path / "art/manifest.json").read_text())["run"]["data"]["spec"]
    assert recorded == f"npz:{(tmp_path / 'project/d.npz').resolve()}"
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = invoke("evaluate", tmp_path / "art", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["samples"] == 40


# ---------------------------------------------------------------- bad input: one sentence, own code, no output
def bad_input_cases(tmp: Path, model_file: Path, default_artifact: Path):
    rng = np.random.default_rng(0)
    corrupt = tmp / "corrupt.onnx"
    corrupt.write_bytes(os.urandom(256))
    pickled = tmp / "pickled.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), pickled)
    wrong_shape = npz_file(tmp / "rgb.npz", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 8))
    nan = npz_file(tmp / "nan.npz", np.full((8, 1, 28, 28), np.nan, dtype=np.float32), rng.integers(0, 10, 8))
    empty = npz_file(tmp / "empty.npz", np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    a_file = tmp / "plain-file"
    a_file.write_text("x")
    newer = tmp / "newer"
    shutil.copytree(default_artifact, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(manifest))
    user_dir = tmp / "user-dir"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("mine")
    return {
        "missing model": (["convert", tmp / "nope.onnx"], 4, "nope.onnx"),
        "evaluate a plain directory": (["evaluate", user_dir], 10, "not an snnconv artifact"),
        # refused before any work: the data error would come first otherwise
        "-o onto other files": (["convert", "-o", user_dir, "--data", f"npz:{tmp / 'missing.npz'}"], 9,
                                "is not an snnconv artifact"),
        "-o the working directory": (["convert", "-o", ".", "--data", f"npz:{tmp / 'missing.npz'}"], 9,
                                     "holds the working directory"),
        "-o the artifact compressed": (["compress", default_artifact, "--method", "seenn", "-o", default_artifact],
                                       9, "is the artifact being compressed"),
        "corrupt model": (["convert", corrupt], 4, "corrupt.onnx"),
        "unsupported node": (["convert", f"{model_file}:gelu"], 6, "gelu"),
        "no relu": (["convert", f"{model_file}:linear_only"], 6, "no ReLU"),
        "wrong shape": (["convert", "--data", f"npz:{wrong_shape}"], 8, "shape"),
        "nan data": (["convert", "--data", f"npz:{nan}"], 8, "NaN"),
        "empty data": (["convert", "--data", f"npz:{empty}"], 8, "empty"),
        "T <= 0": (["convert", "-T", "0"], 3, "-T"),
        "unknown preset": (["convert", "--energy", "7nm-dream"], 3, "7nm-dream"),
        "unwritable output": (["convert", "-o", a_file / "out"], 9, "plain-file"),
        "pickle without opt-in": (["convert", pickled], 5, "--allow-pickle"),
        "newer schema": (["evaluate", newer], 10, "newer"),
        "unknown balance": (["convert", "--balance", "median"], 3, "--balance"),
        "zero batch size": (["convert", "--batch-size", "0"], 3, "--batch-size"),
        "zero batch size, compress": (["compress", default_artifact, "--method", "seenn", "--batch-size", "0", "-o",
                                       tmp / "should-not-exist"], 3, "--batch-size"),
        "negative TEAS noise": (["compress", default_artifact, "--method", "teas", "--noise", "-1", "-o",
                                 tmp / "should-not-exist"], 3, "--noise"),
    }


CASES = ["missing model", "evaluate a plain directory", "-o onto other files", "-o the working directory",
         "-o the artifact compressed", "corrupt model", "unsupported node", "no relu", "wrong shape", "nan data", "empty data",
         "T <= 0", "unknown preset", "unwritable output", "pickle without opt-in", "newer schema", "unknown balance",
         "zero batch size", "zero batch size, compress", "negative TEAS noise"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, model_file, default_artifact, monkeypatch):
    args, code, named = bad_input_cases(tmp_path, model_file, default_artifact)[case]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "should-not-exist"
    extra = ["-o", out] if args[0] == "convert" and "-o" not in args else []
    result = invoke(*args, *extra, "--calib-samples", "50", "--limit", "50", "--quiet")
    assert result.exit_code == code, result.output
    message = " ".join(result.output.split())
    assert named in message
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not (tmp_path / "snnconv-out").exists()
    assert sorted(p.name for p in (tmp_path / "user-dir").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("method, args, message", [
    ("teas", ["--policy"], "--policy applies to --method seenn, not to --method teas"),
    ("teas", ["--mask-weight", "5"], "--mask-weight applies to --method dts"),
    ("ttfs", ["--alpha", "0.5"], "--alpha applies to --method seenn"),
    ("seenn", ["--window", "4"], "--window applies to --method ttfs"),
    ("dts", ["--finetune-loss", "distill"], "--finetune-loss applies to --method teas and seenn"),
    ("dts", ["--finetune"], "--finetune applies to --method teas, seenn and ttfs"),
    ("teas", ["--keep-thresholds", "--no-relaxation"], "--no-relaxation applies to --method ttfs"),
    ("teas", ["--epochs", "2"], "--epochs sets training, which --method teas runs only with --finetune"),
    ("ttfs", ["--kernel-reg", "0"], "--kernel-reg shapes the --finetune training; add --finetune"),
    ("teas", ["--avg-t-budget", "8", "--acc-budget", "0.2"], "drop one of the two"),
])
def test_compress_refuses_options_its_method_would_not_read(tmp_path, method, args, message):
    """No option is silently ignored: one the method does not read is refused before anything is loaded."""
    result = invoke("compress", tmp_path, "--method", method, "-o", tmp_path / "o", *args)
    assert result.exit_code == 3, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method, args, message", [
    ("teas", ["--min-t", "16"], "--min-t 16 exceeds the network's T = 8"),
    ("teas", ["--candidates", "64,4"], "--candidates 64 outside 1..8"),
    ("seenn", ["--exit-chunk", "8"], "--exit-chunk 8 leaves no exit decision before the network's T = 8"),
    ("dts", ["--initial-steps", "9"], "--initial-steps 9 exceeds the network's T = 8"),
])
def test_compress_options_beyond_the_artifacts_t_are_refused_before_data_is_read(default_artifact, tmp_path,
                                                                                  method, args, message):
    """The evaluation data does not exist: the option is refused first (exit 3, not the data error 8)."""
    result = invoke("compress", default_artifact, "--method", method, *args, "-o", tmp_path / "o",
                    "--data", f"npz:{tmp_path / 'missing.npz'}")
    assert result.exit_code == 3, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_gates_no_run_could_pass_are_refused(default_artifact, tmp_path):
    for gate in ("--max-avg-t", "--min-energy-ratio"):
        result = invoke("evaluate", default_artifact, "--report-dir", tmp_path / "r", gate, "-1", "--quiet")
        assert result.exit_code == 3 and f"{gate} must be positive" in " ".join(result.output.split())
    assert not (tmp_path / "r").exists()


def _convert_exit(tmp_path, *args) -> tuple[int, str]:
    result = invoke("convert", *args, "-o", tmp_path / "out", "--limit", "50", "--calib-samples", "50", "--quiet")
    return result.exit_code, " ".join(result.output.split())


def test_a_pt_file_that_is_no_torch_file_is_corrupt_not_an_unsafe_pickle(tmp_path):
    """Random bytes must not be presented as a pickle to be trusted with --allow-pickle."""
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x07" + np.random.default_rng(0).integers(0, 256, 4095, dtype=np.uint8).tobytes())
    for extra in ([], ["--allow-pickle"]):
        code, message = _convert_exit(tmp_path, path, *extra)
        assert code == 4 and "corrupt or not a PyTorch file" in message and "Traceback" not in message, message
    archive = tmp_path / "notes.pt"  # a zip archive, but not one torch wrote
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.txt", "hello")
    code, message = _convert_exit(tmp_path, archive)
    assert code == 4 and "corrupt or not a PyTorch file" in message, message
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), whole)
    code, message = _convert_exit(tmp_path, whole)
    assert code == 5 and "--allow-pickle" in message
    assert not (tmp_path / "out").exists()


def test_a_state_dict_that_does_not_fit_its_arch_names_the_first_difference(tmp_path):
    arch = tmp_path / "arch.py"
    arch.write_text("from torch import nn\n\ndef small():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), "
                    "nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))\n")
    fitting = {"0.weight": torch.zeros(4, 1, 3, 3), "0.bias": torch.zeros(4), "3.weight": torch.zeros(10, 3136),
               "3.bias": torch.zeros(10)}
    cases = {"wrong.pt": ({**fitting, "0.weight": torch.zeros(8, 1, 3, 3)},
                          "'0.weight' has shape [8, 1, 3, 3] in the file but [4, 1, 3, 3] in the architecture"),
             "partial.pt": ({"0.weight": fitting["0.weight"]}, "the architecture has '0.bias' but the file does not"),
             "extra.pt": ({**fitting, "9.weight": torch.zeros(1)}, "the file has '9.weight' but the architecture")}
    for name, (state, named) in cases.items():
        torch.save(state, tmp_path / name)
        code, message = _convert_exit(tmp_path, tmp_path / name, "--arch", f"{arch}:small")
        assert code == 4 and named in message and "check --arch" in message, message
    assert not (tmp_path / "out").exists()


def test_debug_shows_traceback(tmp_path):
    result = invoke("convert", tmp_path / "nope.onnx", "--debug", "-o", tmp_path / "o")
    assert result.exit_code == 4
    assert "Traceback" in result.output


def test_installed_console_script_and_module(tmp_path):
    script = Path(sys.executable).with_name("snnconv")
    assert script.exists(), "the console script is installed with the package"
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "convert" in help_text and "evaluate" in help_text
    out = tmp_path / "via-module"
    run = subprocess.run([sys.executable, "-m", "snnconv", "convert", "-o", out, *FAST, "--json"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["time_steps"] == 8
    assert (out / "manifest.json").is_file()


def test_balance_steps_option_reaches_the_manifest(tmp_path):
    """The mse search quantizes for half the converted T unless --balance-steps says otherwise; the manifest
    names the T used; a non-positive value is refused before anything is written."""
    from helpers import cli_artifact
    default = cli_artifact(tmp_path / "default", "--calib-samples", "100")
    chosen = cli_artifact(tmp_path / "chosen", "--calib-samples", "100", "--balance-steps", "8")
    steps = {name: json.loads((path / "manifest.json").read_text())["config"]["balance"]["time_steps"]
             for name, path in (("default", default), ("chosen", chosen))}
    assert steps == {"default": 4, "chosen": 8}
    bad = CliRunner().invoke(app, ["convert", "-o", str(tmp_path / "bad"), "--limit", "50", "-T", "8",
                                   "--balance-steps", "0", "--quiet"])
    assert bad.exit_code != 0
    assert "--balance-steps must be positive" in bad.output
    assert not (tmp_path / "bad").exists()
