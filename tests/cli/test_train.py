"""The train, summarize-logs and update-network commands."""

from __future__ import annotations

import copy
import json

import yaml
from tiny_experiment import PARAMETERS
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.data.config import DataConfig

runner = CliRunner()


def files(sources, tmp_path, **changes):
    parameters = copy.deepcopy(PARAMETERS)
    parameters["training"]["epoch count"] = 2
    for key, value in changes.items():
        parameters["training"][key] = value
    data, params = tmp_path / "data.yaml", tmp_path / "parameters.yaml"
    DataConfig(sources).save(data)
    params.write_text(yaml.safe_dump(parameters))
    return data, params


def test_train_then_continue_then_summarize(sources, tmp_path):
    data, params = files(sources, tmp_path)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(data), str(params), "-e", "a", "-o", str(out),
                                 "--seed", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2/2:" in result.output and "a: best validation accuracy" in result.output
    result = runner.invoke(app, ["train", str(data), str(params), "-e", "a", "-o", str(out),
                                 "--continue", "-p", "training.epoch count=3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 3/3:" in result.output and "epoch 1/3" not in result.output
    result = runner.invoke(app, ["summarize-logs", str(out), "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output.strip().splitlines()[0])
    assert entry["experiment"] == "a" and entry["epochs"] == 3
    assert entry["metric"] == "validation accuracy" and 1 <= entry["best epoch"] <= 3
    table = runner.invoke(app, ["summarize-logs", str(out)])
    assert table.exit_code == 0 and "validation accuracy" in table.output


def test_train_reports_a_wrong_key_and_writes_nothing(sources, tmp_path):
    data, params = files(sources, tmp_path)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(data), str(params), "-e", "b", "-o", str(out),
                                 "-p", "training.epoch count=zero"])  # fmt: skip
    assert result.exit_code == 1
    assert "training.epoch count" in result.output and "integer" in result.output
    assert not (out / "b").exists()


def test_update_network_checks_and_imports(sources, tmp_path):
    import torch

    data, params = files(sources, tmp_path)
    out = tmp_path / "runs"
    runner.invoke(app, ["train", str(data), str(params), "-e", "c", "-o", str(out), "--seed", "2"])
    model = out / "c" / "c_best_model.safetensors"
    result = runner.invoke(app, ["update-network", str(model)])
    assert result.exit_code == 0 and "unet model, format version 1" in result.output
    from digipath.models import load_model

    state = tmp_path / "weights.pt"
    torch.save(load_model(model).network.state_dict(), state)
    target = tmp_path / "imported.safetensors"
    result = runner.invoke(app, ["update-network", str(model), "--state-dict", str(state),
                                 "-o", str(target)])  # fmt: skip
    assert result.exit_code == 0, result.output and target.is_file()
    bad = runner.invoke(app, ["update-network", str(state)])
    assert bad.exit_code == 1 and "not a digipath model file" in bad.output
