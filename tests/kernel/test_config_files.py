"""Every configuration file the kernel reads refuses text that is not TOML, or not UTF-8, with
``invalid_request`` naming the file — none falls back to its defaults (a taint policy that did
would turn the operator's rules off without a word)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import InvalidRequest
from agentix.core.toml_text import parse_toml
from agentix.kernel.cap_config import load_secrets, load_taint
from agentix.kernel.config import load_config
from agentix.kernel.mcp_config import load_mcp_config
from agentix.llm.inference_config import load_config as load_inference_config

LOADERS = {
    "kernel": lambda home: load_config(home),
    "secrets": lambda home: load_secrets(home, {}),
    "taint": load_taint,
    "mcp": load_mcp_config,
    "providers": lambda home: load_inference_config(home, {}, local_installed=False),
}
BAD = {
    "not_toml": b"[taint\nrules = [",
    "not_utf8": b"[kernel]\nname = \"\xff\xfe\"\n",
}


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_config_toml_that_cannot_be_read_is_refused_naming_the_file(tmp_path: Path, loader: str, bad: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(BAD[bad])
    with pytest.raises(InvalidRequest) as err:
        LOADERS[loader](tmp_path)
    assert str(cfg) in str(err.value) and err.value.data["field"] == "config.toml"
    assert cfg.read_bytes() == BAD[bad]  # read, never rewritten


@pytest.mark.parametrize("bad", sorted(BAD))
def test_a_secrets_file_that_cannot_be_read_is_refused(tmp_path: Path, bad: str) -> None:
    vault = tmp_path / "keys" / "secrets.toml"
    vault.parent.mkdir()
    vault.write_bytes(BAD[bad])
    os.chmod(vault, 0o600)
    with pytest.raises(InvalidRequest) as err:
        load_secrets(tmp_path, {})
    assert str(vault) in str(err.value) and err.value.data["field"] == "secrets.toml"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_parse_toml_answers_a_table_or_invalid_request_for_any_bytes(data: bytes) -> None:
    try:
        doc = parse_toml(data, "f.toml", "f")
    except InvalidRequest as err:
        assert "f.toml" in str(err)
    else:
        assert isinstance(doc, dict)
