"""benchmarks/structure.py on the committed ResNet-20 checkpoint: L1 and probe p-values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import pruning
from benchmarks import structure


def test_structure_report_on_the_committed_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (pruning.COMMITTED_CHECKPOINTS / "resnet20-fashion-mnist-e6.pt").exists():
        pytest.skip("the committed ResNet-20 checkpoint is not in this tree")
    out = tmp_path / "structure.json"
    structure.main(
        [
            "--task",
            "resnet20",
            "--val-size",
            "200",
            "--n-calibration-images",
            "64",
            "--probe-images",
            "32",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["fingerprint"] == "32078429fd540304"
    assert result["n_layers"] == 9 and result["n_clusters"] == 3
    for key in ("p_l1_eu", "p_l1_js", "p_probe_kl", "p_probe_top1"):
        assert 0.0 < result[key] <= 1.0
    probe = result["probe"]
    assert probe["n_evaluations"] == 1 + 9 * 4 and probe["n_images"] == 32
    for curves in (probe["drops"], probe["divergences"]):
        assert len(curves) == 9 and all(len(d) == 4 for d in curves.values())
    assert "probe (37 evaluations of 32 images" in capsys.readouterr().out


def test_structure_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        structure.main(["--task", "resnet56", "--train-epochs", "99", "--work-dir", str(tmp_path)])


def test_warning_names_the_distance_that_passes_on_the_committed_resnet56(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The committed ResNet-56's L1 densities fail the test with the default Euclidean
    distance and pass it with Jensen-Shannon (benchmarks/results/structure/resnet56-e6.json);
    the sampler's warning says so."""
    import logging

    import optuna
    from optuna.distributions import FloatDistribution
    import torch

    from optuna_bocr import BOCRSampler
    from optuna_bocr import ParameterFeatures

    path = pruning.COMMITTED_CHECKPOINTS / "resnet56-fashion-mnist-e6.pt"
    if not path.exists():
        pytest.skip("the committed ResNet-56 checkpoint is not in this tree")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    # The prunable layers' features: the L1 norm of each input channel of each block's
    # second convolution (what PruningObjective.layer_features() gives as samples).
    layers = [k[: -len(".weight")] for k in state if k.endswith("conv2.weight")]
    samples = {n: state[f"{n}.weight"].abs().sum(dim=(0, 2, 3)).double().numpy() for n in layers}
    space = {n: FloatDistribution(0.1, 1.0) for n in layers}
    recorded = json.loads(
        (Path(structure.__file__).parent / "results/structure/resnet56-e6.json").read_text()
    )
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            default = BOCRSampler(space, features=ParameterFeatures(samples=samples), seed=0)
            js = BOCRSampler(
                space, features=ParameterFeatures(samples=samples), distance="js", seed=0
            )
    finally:
        optuna.logging.disable_propagation()
    assert len(layers) == 27
    assert default.structure_pvalue == recorded["p_l1_eu"] == 0.3
    assert js.structure_pvalue == recorded["p_l1_js"] == 0.05
    warnings = [r.getMessage() for r in caplog.records if "better than chance" in r.getMessage()]
    assert len(warnings) == 1  # only the default distance fails
    assert "With distance 'js' they do (p = 0.05): pass distance='js'" in warnings[0]
    assert "(command line: --distance js)" in warnings[0]
