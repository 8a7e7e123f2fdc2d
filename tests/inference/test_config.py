"""Configuration: config.toml + environment; every mistake names its key."""

from __future__ import annotations

import pytest

from agentix.core.errors import InvalidRequest
from agentix.llm.inference_config import LOCAL_MODEL, load_config


def cfg(tmp_path, toml="", env=None, local=False):
    (tmp_path / "config.toml").write_text(toml)
    return load_config(tmp_path, env or {}, local_installed=local)


def test_environment_variables_make_providers():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        c = load_config(Path(d), {"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
                                  "ANTHROPIC_API_KEY": "ak", "DEEPSEEK_API_KEY": "dk"}, local_installed=False)
    assert c.providers["openai"].base_url == "http://127.0.0.1:8000/v1" and c.providers["openai"].api_key == "sk"
    assert c.providers["anthropic"].kind == "anthropic" and c.providers["deepseek"].kind == "openai"
    assert c.providers["deepseek"].base_url == "https://api.deepseek.com/v1"
    assert c.default_model == "openai:gpt-4o-mini"
    assert "sk" not in repr(c.providers["openai"])  # keys are never printed


def test_agentix_model_and_resolution(tmp_path):
    c = cfg(tmp_path, env={"ANTHROPIC_API_KEY": "k", "AGENTIX_MODEL": "anthropic:claude-x"})
    p, m = c.resolve(None)
    assert p.name == "anthropic" and m == "claude-x"
    with pytest.raises(InvalidRequest, match="no provider 'nope'"):
        c.resolve("nope:x")
    with pytest.raises(InvalidRequest, match="provider:model"):
        c.resolve("gpt-4o")


def test_offline_default_is_local_when_installed(tmp_path):
    assert cfg(tmp_path, local=True).default_model == LOCAL_MODEL


def test_nothing_configured_says_what_to_configure(tmp_path):
    with pytest.raises(InvalidRequest) as ei:
        cfg(tmp_path)
    assert "OPENAI_API_KEY" in ei.value.message and "agentix[local]" in ei.value.message


@pytest.mark.parametrize("toml,key", [
    ("[providers.openai]\nconcurrency = 0\n", "providers.openai.concurrency"),
    ("[providers.openai]\nrequests_per_minute = -1\n", "providers.openai.requests_per_minute"),
    ("[providers.x]\nkind = 'grpc'\n", "providers.x.kind"),
    ("[providers.x]\nkind = 'openai'\nbase_url = 'ftp://h'\n", "providers.x.base_url"),
    ("[providers.x]\nkind = 'openai'\nbase_urll = 'http://h'\n", "providers.x.base_urll"),
    ("[providers.x]\nkind = 'openai'\napi_key_env = 'NOT_SET_ANYWHERE'\n", "providers.x.api_key_env"),
    ("[providers.s]\nkind = 'scripted'\n", "providers.s.script"),
    ("[inference]\ndiscipline = 'lottery'\n", "inference.discipline"),
    ("[inference]\nmax_wait = 'soon'\n", "inference.max_wait"),
    ("[prices.'openai:x']\ninput_per_mtok = 'free'\noutput_per_mtok = 1\n", "prices.openai:x.input_per_mtok"),
    ("default_model = 'mystery:model'\n", "default_model"),
    ("[providers.openai\n", "config.toml"),
])
def test_bad_config_names_the_key(tmp_path, toml, key):
    with pytest.raises(InvalidRequest) as ei:
        cfg(tmp_path, toml, env={"OPENAI_API_KEY": "k"})
    assert ei.value.data["field"] == key
    assert key.split(".")[-1] in ei.value.message


def test_scripted_provider_from_config(tmp_path):
    (tmp_path / "demo.yaml").write_text("- text: hello\n")
    c = cfg(tmp_path, "default_model = 'demo:script'\n[providers.demo]\nkind = 'scripted'\nscript = 'demo.yaml'\n")
    assert c.providers["demo"].script == str(tmp_path / "demo.yaml")
    assert c.price("demo", "script").cost(100, 100) == 0.0


def test_other_components_sections_are_left_alone(tmp_path):
    c = cfg(tmp_path, "[kernel]\nmax_agents = 5\n[inference]\ndiscipline = 'fifo'\n", env={"OPENAI_API_KEY": "k"})
    assert c.scheduler.discipline == "fifo"


@pytest.mark.parametrize("line,provider,model,url", [
    ('default_model = "ollama:qwen2.5:7b"', "ollama", "qwen2.5:7b", "http://127.0.0.1:11434/v1"),
    ('default_model = "vllm:Qwen/Qwen2.5-7B-Instruct"', "vllm", "Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1"),
    ('default_model = "llamacpp:default"', "llamacpp", "default", "http://127.0.0.1:8080/v1"),
    ('default_model = "lmstudio:qwen2.5-7b-instruct"', "lmstudio", "qwen2.5-7b-instruct", "http://127.0.0.1:1234/v1"),
])
def test_one_line_points_at_a_local_openai_compatible_server(tmp_path, line, provider, model, url):
    """The one line docs/inference.md gives for Ollama, vLLM, llama.cpp server and LM Studio."""
    (tmp_path / "config.toml").write_text(line + "\n")
    cfg = load_config(tmp_path, {}, local_installed=True)
    p, name = cfg.resolve(None)
    assert (p.name, p.kind, p.base_url, name) == (provider, "openai", url, model)
    assert p.api_key is None


def test_the_one_line_also_works_as_an_environment_variable(tmp_path):
    cfg = load_config(tmp_path, {"AGENTIX_MODEL": "ollama:llama3.2"}, local_installed=False)
    p, name = cfg.resolve(None)
    assert (p.name, p.base_url, name) == ("ollama", "http://127.0.0.1:11434/v1", "llama3.2")


def test_a_table_overrides_the_well_known_address(tmp_path):
    (tmp_path / "config.toml").write_text('default_model = "ollama:llama3.2"\n'
                                          '[providers.ollama]\nbase_url = "http://gpu-box:11434/v1"\n')
    p, _ = load_config(tmp_path, {}, local_installed=False).resolve(None)
    assert p.base_url == "http://gpu-box:11434/v1" and p.kind == "openai"
