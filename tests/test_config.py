from pathlib import Path

import pytest

from microvqa_pp.config import explicit_settings, load_config, parse_override
from microvqa_pp.errors import ConfigError


def test_offline_profile_has_no_clip_or_nli():
    config = load_config("offline")
    assert config.agent.backend == "offline"
    assert config.signals.clip_model is None
    assert config.signals.nli_model is None


def test_full_profile_names_field_models():
    config = load_config("full")
    assert config.agent.backend == "openai"
    assert config.signals.clip_model.startswith("hf-hub:microsoft/BiomedCLIP")
    assert "deberta-v3" in config.signals.nli_model


def test_layers_later_wins(tmp_path: Path):
    toml = tmp_path / "settings.toml"
    toml.write_text("seed = 7\n[filter]\nkeep_share = 0.5\n[agent]\nmodel = 'from-file'\n")
    explicit = explicit_settings(
        file=toml,
        values={"agent": {"model": "from-option"}},
        overrides=["filter.keep_share=0.9", "signals.nli_model=none"],
    )
    config = load_config("full", explicit)
    assert config.seed == 7
    assert config.agent.model == "from-option"
    assert config.filter.keep_share == 0.9
    assert config.signals.nli_model is None


def test_override_values_are_typed():
    assert parse_override("workers=4") == {"workers": 4}
    assert parse_override("ingest.licenses=['commercial']") == {"ingest": {"licenses": ["commercial"]}}
    assert parse_override("agent.model=gpt-4o") == {"agent": {"model": "gpt-4o"}}


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="filter.keep_shares"):
        load_config("offline", {"filter": {"keep_shares": 0.5}})


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError, match="keep_share"):
        load_config("offline", {"filter": {"keep_share": 1.5}})


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("filter.keep_share")


def test_section_fingerprint_changes_with_setting():
    first = load_config("offline").section_fingerprint("filter")
    second = load_config("offline", {"filter": {"keep_share": 0.5}}).section_fingerprint("filter")
    unrelated = load_config("offline", {"mcq": {"num_options": 5}}).section_fingerprint("filter")
    assert first != second
    assert first == unrelated


def test_per_task_and_threshold_are_refused_together():
    with pytest.raises(ConfigError, match="per_task .* cannot be combined with threshold"):
        load_config("offline", {"filter": {"per_task": True, "threshold": 0.6}})


def test_unknown_key_names_the_nearest_setting():
    with pytest.raises(ConfigError, match=r"unknown setting filter\.keep_shar; did you mean filter\.keep_share\?"):
        load_config("offline", {"filter": {"keep_shar": 0.8}})


def test_unknown_section_names_the_nearest_section():
    with pytest.raises(ConfigError, match=r"unknown setting filtr; did you mean filter\?"):
        load_config("offline", {"filtr": {"keep_share": 0.8}})


def test_unknown_key_without_near_match_lists_the_section():
    with pytest.raises(ConfigError, match=r"unknown setting split\.zzz; known settings here: split\.test_share"):
        load_config("offline", {"split": {"zzz": 1}})
