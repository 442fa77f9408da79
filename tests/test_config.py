from pathlib import Path

import pytest

from ets import ConfigError, SearchConfig
from ets.config import SELECT_METHODS

# the published ETS files, copied unchanged from the reference's hype-parameters/
REFERENCE_CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "reference").glob("*.yaml"))


@pytest.mark.parametrize("path", REFERENCE_CONFIGS, ids=lambda p: p.name)
def test_published_files_load_unchanged(path):
    assert len(REFERENCE_CONFIGS) == 3
    config = SearchConfig.from_yaml(path)
    width = int(path.stem.split("_")[1])
    assert config.width == width
    assert config.select_method == "softmax_costmodel"
    assert config.softmax_temperature == 0.2 and config.lambdac == 1.0
    assert config.policy_model_type == "llemma" and config.format_name == "llemma"
    assert config.store_path == f"./exp_results/ets_{width}_math500/"


def test_shipped_configs_load():
    shipped = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(shipped) >= 8
    methods = {SearchConfig.from_yaml(p).select_method for p in shipped}
    assert methods == set(SELECT_METHODS)  # every method has a sample config


def test_misspelled_key_names_it_and_the_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("width: 4\nlambda_c: 1.0\n")
    with pytest.raises(ConfigError, match=r"unknown key 'lambda_c'.*did you mean 'lambdac'"):
        SearchConfig.from_yaml(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"width": 0}, r"width: must be >= 1"),
        ({"width": "16"}, r"width: expected a whole number"),
        ({"select_method": "rebase"}, r"select_method: 'rebase' is not one of softmax_costmodel, softmax"),
        ({"softmax_temperature": 0}, r"softmax_temperature: must be > 0"),
        ({"lambdas": -1}, r"lambdas: must be >= 0"),
        ({"ilp_solver": "gurobi"}, r"ilp_solver: 'gurobi' is not one of highs, highs-milp, cbc"),
        ({"prompt_format": "nope"}, r"prompt_format: 'nope' is not one of"),
        ({"policy_model_type": "gpt"}, r"policy_model_type: 'gpt' has no prompt format"),
        ({"policy_weights": "q4_0"}, r"policy_weights: 'q4_0' is not one of auto, f16, q8_0, stored"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**changes)


def test_whole_floats_become_ints():
    assert SearchConfig(width=8.0).width == 8
