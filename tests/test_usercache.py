"""The user cache (tas.usercache) and what uses it to start faster: the import names of tas's modules
(tas.codedeps), and the libyaml reading of params.yaml (tas.yamlload)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tas import codedeps, usercache, yamlload


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(usercache.ENV, str(folder))
    monkeypatch.setattr(codedeps, "_imports_cache", None)
    codedeps.direct_imports.cache_clear()
    codedeps.job_code.cache_clear()
    yield folder
    codedeps.direct_imports.cache_clear()
    codedeps.job_code.cache_clear()


def test_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(usercache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert usercache.root() == tmp_path / "xdg" / "tas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert usercache.root() == Path.home() / ".cache" / "tas"
    monkeypatch.setenv(usercache.ENV, str(tmp_path / "mine"))
    assert usercache.root() == tmp_path / "mine"
    monkeypatch.setenv(usercache.ENV, "OFF")
    assert usercache.root() is None
    usercache.write_json("x.json", {"a": 1})  # off: nothing written, nothing raised
    assert usercache.read_json("x.json") is None


def test_round_trip_corrupt_and_unwritable(cache):
    usercache.write_json("sub/v.json", {"a": [1, 2]})
    assert usercache.read_json("sub/v.json") == {"a": [1, 2]}
    assert [p.name for p in (cache / "sub").iterdir()] == ["v.json"]  # no temporary file left
    (cache / "sub" / "v.json").write_text('{"a": [1,')
    assert usercache.read_json("sub/v.json") is None
    assert usercache.read_json("missing.json") is None
    (cache / "blocked").write_text("a file where a folder should be")
    usercache.write_json("blocked/v.json", {"a": 1})  # fails to write: skipped, not raised
    assert usercache.read_json("blocked/v.json") is None


def test_import_names_are_kept_by_content(cache, tmp_path):
    module = tmp_path / "mod.py"
    module.write_text("import tas.paths\n\ndef f():\n    from tas import io\n")
    every, top = codedeps._import_names(module, "tas.mod")
    assert set(every) >= {"tas.paths", "tas", "tas.io"} and "tas.io" not in top
    codedeps._save_imports_cache()
    saved = json.loads((cache / codedeps.IMPORTS_CACHE).read_text())
    assert [k for k in saved if k.startswith("tas.mod:")] and len(saved) == 1
    module.write_text("import tas.runs\n")  # new content: a new key, read again
    every, _ = codedeps._import_names(module, "tas.mod")
    assert every == ["tas.runs"]


def test_job_code_reads_the_cache_and_survives_a_broken_one(cache, monkeypatch):
    cold = codedeps.job_code("tables", None, None, "main")
    assert (cache / codedeps.IMPORTS_CACHE).is_file()
    # A planted name in the cached entry of tas.jobs.tables shows that a later process reads the cache.
    saved = json.loads((cache / codedeps.IMPORTS_CACHE).read_text())
    key = next(k for k in saved if k.startswith("tas.jobs.tables:"))
    assert "tas/sweep.py" not in cold
    saved[key][0].append("tas.sweep")
    (cache / codedeps.IMPORTS_CACHE).write_text(json.dumps(saved))
    for fresh in (True, False):
        monkeypatch.setattr(codedeps, "_imports_cache", None)
        codedeps.direct_imports.cache_clear()
        codedeps.job_code.cache_clear()
        if not fresh:
            (cache / codedeps.IMPORTS_CACHE).write_text("not json")
        warm = codedeps.job_code("tables", None, None, "main")
        assert ("tas/sweep.py" in warm) is fresh
        assert set(warm) - {"tas/sweep.py"} == set(cold)


def test_fast_yaml_reads_params_as_the_python_loader(tmp_path):
    text = Path("params.yaml").read_text()
    node = yaml.compose(text, Loader=yamlload.Loader)
    loader = yamlload.Loader("")
    assert yamlload.load_text(text) == loader.construct_document(node)
    assert yamlload.load_text("a: 1e-3\nb: 5E4\nc: .5e1\nd: '1e3'\n") == {"a": 0.001, "b": 50000.0, "c": 5.0,
                                                                           "d": "1e3"}
    with pytest.raises(Exception, match="line 3"):
        yamlload.load_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(Exception, match="not valid YAML at line 2"):
        yamlload.load_text("a: [1,\n")
