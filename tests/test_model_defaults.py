"""A plain `ets run` on the built-in CPU policy takes that policy's defaults for every key the user leaves
unset; keys the user sets win; against servers (and in a published reference config's keys) nothing changes."""

from pathlib import Path

import pytest

from ets.cli import build_parser
from ets.commands.run import defaults_line, resolve_config
from ets.config import SearchConfig
from ets.models import BUILTIN_POLICIES, SMALL_POLICY_DEFAULTS

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "configs" / "reference" / "ets_16_math500.yaml"


def resolved(*flags):
    args = build_parser().parse_args(["run", "--input_path", "gsm8k", "--output_path", "x/answers.json", *flags])
    return resolve_config(args)


def test_plain_run_on_the_builtin_policy_takes_its_defaults():
    config, defaults = resolved()
    reference = SearchConfig()
    assert defaults == SMALL_POLICY_DEFAULTS
    # every default is one the reference's default differs from, and the run's config holds it
    for key, value in SMALL_POLICY_DEFAULTS.items():
        assert getattr(config, key) == value != getattr(reference, key), key
    assert (config.temperature, config.max_step_tokens, config.max_tokens) == (0.4, 48, 640)
    assert config.calculator and config.retire_empty_steps and config.format_name == "small_instruct"
    assert config.width == reference.width  # keys with no model default keep ours


@pytest.mark.parametrize("policy", sorted(BUILTIN_POLICIES))
def test_each_builtin_policy_carries_defaults(policy):
    config, defaults = resolved("--policy_model", policy)
    assert defaults and config.policy_model == policy and config.max_step_tokens == 48


def test_a_key_the_user_sets_wins(tmp_path):
    config, defaults = resolved("--set", "temperature=0.9", "--set", "calculator=false", "--prompt_format", "qwen")
    assert (config.temperature, config.calculator, config.format_name) == (0.9, False, "qwen")
    assert not {"temperature", "calculator", "prompt_format"} & set(defaults)
    assert config.max_step_tokens == 48  # the keys left unset still take the model's defaults
    path = tmp_path / "c.yaml"
    path.write_text("max_tokens: 900\npolicy_model_type: mistral\n")
    config, defaults = resolved("--config", str(path))
    assert config.max_tokens == 900 and config.format_name == "mistral"  # a format chosen by model type counts
    assert "max_tokens" not in defaults and "prompt_format" not in defaults


def test_a_reference_config_keeps_every_key_it_sets():
    file_keys = SearchConfig.read_yaml(REFERENCE)
    on_cpu, defaults = resolved("--config", str(REFERENCE))
    on_servers, none = resolved("--config", str(REFERENCE), "--policy_host", "http://127.0.0.1:30000",
                                "--reward_host", "http://127.0.0.1:30020")
    assert none == {}
    assert on_servers == SearchConfig.from_yaml(REFERENCE)  # against servers: the reference, exactly
    for key, value in file_keys.items():
        assert getattr(on_cpu, key) == getattr(on_servers, key) == value, key
    assert (on_cpu.temperature, on_cpu.max_tokens, on_cpu.format_name) == (1.0, 1024, "llemma")
    assert set(defaults) == {"calculator", "retire_empty_steps"}  # the file sets every other one


def test_servers_and_other_models_keep_the_reference_defaults(tmp_path):
    assert resolved("--policy_host", "http://127.0.0.1:30000") == (SearchConfig(), {})
    gguf = tmp_path / "m.gguf"
    config, defaults = resolved("--policy_model", str(gguf))
    assert defaults == {} and config.temperature == 1.0
    # a PRM server with the built-in policy: the PRM family stays the user's (the reference's default)
    config, defaults = resolved("--reward_host", "http://127.0.0.1:30020")
    assert "reward_model_type" not in defaults and config.reward_model_type == "llemma"
    assert config.max_step_tokens == 48


def test_the_start_line_names_the_model_and_each_default():
    config, defaults = resolved("--set", "temperature=0.7")
    line = defaults_line(config, defaults)
    assert line.startswith("policy smollm2-135m (built-in, CPU)")
    for part in ("prompt_format small_instruct", "max_step_tokens 48", "max_tokens 640", "calculator true",
                 "retire_empty_steps true", "reward_model_type arithmetic"):
        assert part in line
    assert "temperature" not in line
