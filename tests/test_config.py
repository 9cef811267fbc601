"""Study configs: every bad key, type or value is rejected before anything runs, naming key, value and expectation."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.config import ConfigError, load_config, to_dict

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "studies" / "configs" / "smoke.yaml"


def write(tmp_path, raw: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


@pytest.mark.parametrize("name", ["default", "smoke", "covidx_bit", "tb_bit"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "studies" / "configs" / f"{name}.yaml")
    assert cfg.name == name and cfg.models.sizes


@pytest.mark.parametrize("name", ["default", "smoke", "covidx_bit", "tb_bit"])
def test_the_config_a_study_writes_loads_back_equal(name, tmp_path):
    # a study stamps its directory with config.yaml (study.prepare_study_dir): a rerun or a later tool reads it
    cfg = load_config(ROOT / "studies" / "configs" / f"{name}.yaml")
    written = tmp_path / "config.yaml"
    written.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    assert to_dict(load_config(written)) == to_dict(cfg)


def test_typed_values_and_defaults():
    cfg = load_config(SMOKE)
    assert cfg.data.resolution == 32 and cfg.finetune.recipe.balanced_sampling is True
    assert cfg.resources.num_workers == 0 and cfg.resources.max_failures == 1 and cfg.tracking.uri == ""
    assert cfg.study_dir == Path("runs/smoke")


@pytest.mark.parametrize("override, message", [
    ("data.resolutoin=32", "data.resolutoin: unknown key; expected one of: target, sources, resolution"),
    ("data.resolution=big", "data.resolution: got 'big'; expected an integer"),
    ("data.resolution=true", "data.resolution: got True; expected an integer"),
    ("data.resolution=0", "data.resolution: got 0; expected a value >= 8"),
    ("data.source_sizes=[100, -5]", "data.source_sizes[1]: got -5; expected a value >= 1"),
    ("data.source_sizes=[]", "data.source_sizes: got an empty list"),
    ("data.source_sizes=[1000]", "data.source_sizes[0]: got 1000; expected at most 400, the size of data.sources.medical"),
    ("data.crop=corner", "data.crop: got 'corner'; expected one of 'center', 'none'"),
    ("data.val_fraction=1.0", "data.val_fraction: got 1.0; expected a value < 1"),
    ("data.target.dataset=covid", "data.target.dataset: got 'covid'; expected one of: synthetic-natural"),
    ("data.target.options.sise=3", "data.target.options.sise: unknown option for dataset 'synthetic-covidx'"),
    ("data.target.options.size=0", "data.target.options.size: got 0; expected a value >= 1"),
    ("data.sources.xray={dataset: synthetic-medical}", "data.sources.xray: unknown source role"),
    ("models.ladder=huge", "models.ladder: got 'huge'; expected one of: bit, vit, cpu"),
    ("models.sizes=[w8, R50x1]", "models.sizes[1]: got 'R50x1'; expected a rung of ladder 'cpu'"),
    ("pretrain.steps=-1", "pretrain.steps: got -1; expected a value >= 1"),
    ("finetune.lr_range=[0.1]", "finetune.lr_range: got [0.1]; expected a list of 2 values"),
    ("finetune.lr_range=[0.1, 0.01]", "finetune.lr_range: got [0.1, 0.01]; expected [low, high] with low <= high"),
    ("finetune.scratch_lr_range=[0.1]", "finetune.scratch_lr_range: got [0.1]; expected [low, high] or [] (= lr_range)"),
    ("finetune.scratch_lr_range=[0.5, 0.1]", "finetune.scratch_lr_range: got [0.5, 0.1]; expected [low, high] with low <= high"),
    ("sweep.sampler=random", "sweep.sampler: got 'random'; expected one of 'latin', 'tpe'"),
    ("sweep.sources=[scratch, natural]", "sweep.sources asks for 'natural' pre-training but data.sources.natural"),
    ("sweep.sources=[imagenet]", "sweep.sources[0]: got 'imagenet'; expected one of 'scratch', 'natural'"),
    ("resources.cpus_per_worker=0", "resources.cpus_per_worker: got 0.0; expected a value > 0"),
    ("sweep.slices=[{budgets: [40]}, {sizes: [w16]}]",
     "sweep.slices[1].sizes[0]: got 'w16'; expected one of models.sizes: w8"),
    ("sweep.slices=[{source_sizes: [300, 64]}]",
     "sweep.slices[0].source_sizes[1]: got 64; expected one of data.source_sizes or a published point's images: 300"),
    ("sweep.slices=[{sources: [scratch, natural]}]", "sweep.slices[0].sources[1]: got 'natural'; expected one of "
                                                     "sweep.sources: scratch, medical"),
    ("sweep.slices=[{shots: [5]}]", "sweep.slices[0].shots[0]: got 5; expected one of data.shots: 0"),
    ("sweep.slices=[{budgets: []}]", "sweep.slices[0].budgets: got an empty list; expected at least one an integer"),
    ("sweep.slices=[{budgets: [0]}]", "sweep.slices[0].budgets[0]: got 0; expected a value >= 1"),
    ("sweep.slices=[{budget: [40]}]", "sweep.slices[0].budget: unknown key; expected one of: sizes, sources"),
    ("sweep.slices=[{sources: [medical], scratch_target_sizes: [40]}]",
     "sweep.slices[0].scratch_target_sizes: got [40]; they add from-scratch points, but the slice's sources"),
    ("sweep.scratch_reference_images=200", "sweep.scratch_reference_images: got 200; expected more than the "
                                           "target's 240 images (data.target.options.size) or 0"),
    ("sweep.scratch_reference_images=-1", "sweep.scratch_reference_images: got -1; expected a value >= 0"),
    ("seed", "override 'seed': expected key.path=value"),
])
def test_bad_values_name_key_value_and_expectation(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [override])
    assert message in str(err.value)


def test_missing_required_key_and_non_mapping(tmp_path):
    raw = smoke()
    del raw["data"]["target"]
    with pytest.raises(ConfigError, match="data.target: missing; expected a mapping"):
        load_config(write(tmp_path, raw))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level"):
        load_config(tmp_path / "list.yaml")


def test_yaml_is_safe_loaded(tmp_path):
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_overrides_are_parsed_as_yaml_and_checked_like_the_file():
    cfg = load_config(SMOKE, ["sweep.seeds=[0, 1, 2]", "finetune.recipe.lr=0.01", "resources.use_gpu=true"])
    assert cfg.sweep.seeds == [0, 1, 2] and cfg.finetune.recipe.lr == 0.01 and cfg.resources.use_gpu


def test_help_lists_every_key_with_type_and_default():
    result = subprocess.run([sys.executable, "studies/scaling_law.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    for line in ["data.resolution", "an integer (default 48)", "sweep.sources", "resources.num_workers",
                 "finetune.recipe.balanced_sampling"]:
        assert line in result.stdout
