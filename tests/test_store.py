"""The profile store: which file, cached reads, and writes that keep every byte they do not change."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from helpers import DATA, comments

from aether_mcp.errors import InvalidModelError, ProfileError, UnknownCasteError
from aether_mcp.profile import yaml_edit
from aether_mcp.profile.location import locate, packaged_default
from aether_mcp.profile.store import ProfileStore


def test_set_then_reset_gives_back_the_original_bytes(aether_profile: Path) -> None:
    original = aether_profile.read_bytes()
    store = ProfileStore()
    result = store.set_override("builder", "glm-5")
    assert (result.caste, result.model, result.previous, result.created) == ("builder", "glm-5", "kimi-k2.5", False)
    after_set = aether_profile.read_text()
    assert comments(after_set) == comments(original.decode())
    assert after_set.startswith(original.decode())
    assert after_set.endswith("user_overrides:\n  builder: glm-5\n")

    reset = store.reset_override("builder")
    assert (reset.model, reset.had_override) == ("kimi-k2.5", True)
    assert aether_profile.read_bytes() == original


SHAPES = {
    "no overrides section": "worker_models:\n  scout: glm-5\n  builder: kimi-k2.5\n",
    "a block section at the end": "worker_models:\n  scout: glm-5\nuser_overrides:\n  builder: glm-5\n",
    "a block section with a comment last": "worker_models:\n  scout: glm-5\nuser_overrides:\n  builder: glm-5  # why\n",
    "a block section in the middle": "user_overrides:\n  builder: glm-5\nworker_models:\n  scout: glm-5\n",
    "a flow section": "worker_models: {scout: glm-5}\nuser_overrides: {}\n",
    "a comment last": "worker_models:\n  scout: glm-5\n# the end\n",
    "Aether 1.0": (DATA / "aether-1.0.yaml").read_text(),
}


@pytest.mark.parametrize("final_newline", [True, False], ids=["final newline", "no final newline"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_set_then_reset_is_byte_exact_for_every_shape(isolated: Path, shape: str, final_newline: bool) -> None:
    original = SHAPES[shape] if final_newline else SHAPES[shape].rstrip("\n")
    path = isolated / "model-profiles.yaml"
    path.write_bytes(original.encode())
    store = ProfileStore()
    store.set_override("scout", "minimax-2.5")
    assert store.load()[0].user_overrides == {**(yaml_edit_overrides(original)), "scout": "minimax-2.5"}
    assert path.read_bytes().endswith(b"\n") == final_newline  # the file keeps its own ending
    store.reset_override("scout")
    assert path.read_bytes() == original.encode()


def yaml_edit_overrides(text: str) -> dict[str, str]:
    import yaml

    return dict(yaml.safe_load(text).get("user_overrides") or {})


def test_changing_and_adding_overrides_in_an_existing_block(aether_profile: Path) -> None:
    aether_profile.write_text(
        aether_profile.read_text() + "user_overrides:\n  # kept for the demo\n  scout: glm-5  # fast enough\n"
    )
    store = ProfileStore()
    store.set_override("scout", "minimax-2.5")
    store.set_override("watcher", "glm-5")
    text = aether_profile.read_text()
    assert text.endswith(
        "user_overrides:\n  # kept for the demo\n  scout: minimax-2.5  # fast enough\n  watcher: glm-5\n"
    )
    store.reset_override("scout")
    assert aether_profile.read_text().endswith("user_overrides:\n  # kept for the demo\n  watcher: glm-5\n")


def test_flow_style_overrides_keep_their_style_and_comment(isolated: Path) -> None:
    path = isolated / "model-profiles.yaml"
    original = (DATA / "aether-slots.yaml").read_text()
    path.write_text(original)
    store = ProfileStore()
    store.set_override("builder", "opus")
    assert "user_overrides: {builder: opus}        # written by set, removed by reset\n" in path.read_text()
    assert store.load()[0].user_overrides == {"builder": "opus"}
    store.reset_override("builder")
    assert path.read_text() == original


def test_a_null_overrides_section_is_filled_in(isolated: Path) -> None:
    path = isolated / "model-profiles.yaml"
    path.write_text("worker_models: {scout: a}\nuser_overrides:   # none yet\nproxy: {endpoint: http://x}\n")
    ProfileStore().set_override("scout", "b")
    assert (
        path.read_text()
        == "worker_models: {scout: a}\nuser_overrides: {scout: b}   # none yet\nproxy: {endpoint: http://x}\n"
    )


@pytest.mark.parametrize("model", ["null", "true", "1.5", "0x10", "a:b", "no", "a/b:c@d+e", "1e5", "nan"])
def test_awkward_model_names_read_back_exactly(aether_profile: Path, model: str) -> None:
    store = ProfileStore()
    store.set_override("scout", model)
    assert store.load()[0].user_overrides == {"scout": model}


def test_unknown_caste_is_refused_unless_created(aether_profile: Path) -> None:
    before = aether_profile.read_bytes()
    store = ProfileStore()
    with pytest.raises(UnknownCasteError, match="Known castes: prime, architect"):
        store.set_override("nurse", "glm-5")
    assert aether_profile.read_bytes() == before
    result = store.set_override("nurse", "glm-5", create=True)
    assert (result.caste, result.previous) == ("nurse", None)
    assert "nurse" in store.load()[0].castes()


@pytest.mark.parametrize("caste", ["../etc", "a b", "x" * 65, "-flag", ""])
def test_created_castes_need_plain_names(aether_profile: Path, caste: str) -> None:
    with pytest.raises(UnknownCasteError, match="Invalid caste name"):
        ProfileStore().set_override(caste, "glm-5", create=True)


def test_a_model_missing_from_metadata_is_accepted_with_a_warning(aether_profile: Path) -> None:
    result = ProfileStore().set_override("scout", "qwen-3")
    assert result.warnings == [
        "Model 'qwen-3' is not in model_metadata (known: kimi-k2.5, glm-5, minimax-2.5); check the proxy routes it."
    ]


def test_invalid_model_writes_nothing(aether_profile: Path) -> None:
    before = aether_profile.read_bytes()
    with pytest.raises(InvalidModelError):
        ProfileStore().set_override("scout", "two words")
    assert aether_profile.read_bytes() == before


@pytest.mark.parametrize(
    "broken",
    ["worker_models: {scout: a\n", "worker_models:\n  scout: [a]\n", "\x00\x01binary", "worker_models: {a: x, a: y}\n"],
)
def test_a_broken_file_is_never_overwritten(aether_profile: Path, broken: str) -> None:
    aether_profile.write_text(broken)
    with pytest.raises(ProfileError, match=str(aether_profile)):
        ProfileStore().set_override("scout", "glm-5")
    assert aether_profile.read_text() == broken
    assert sorted(p.name for p in aether_profile.parent.iterdir() if not p.name.endswith(".lock")) == [
        "model-profiles.yaml"
    ]


def test_writing_when_only_the_packaged_default_applies_creates_a_project_copy(isolated: Path) -> None:
    store = ProfileStore()
    assert store.location.rule == "packaged default"
    result = store.set_override("scout", "glm-5")
    target = isolated / ".aether" / "model-profiles.yaml"
    assert result.created and result.path == str(target)
    assert result.warnings[0] == f"Created {target} from the packaged default profile."
    assert store.location.rule == ".aether/model-profiles.yaml"
    assert store.reset_override("scout").had_override
    assert target.read_bytes() == packaged_default().read_bytes()


def test_reset_on_the_packaged_default_writes_nothing(isolated: Path) -> None:
    result = ProfileStore().reset_override("scout")
    assert (result.had_override, result.model) == (False, "minimax-2.5")
    assert not (isolated / ".aether").exists()


def test_location_rules_in_order(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    (cwd / ".aether").mkdir(parents=True)
    assert locate(None, cwd, {}).rule == "packaged default"
    (cwd / "model-profiles.yaml").write_text("{}")
    assert locate(None, cwd, {}).rule == "model-profiles.yaml"
    (cwd / ".aether" / "model-profiles.yaml").write_text("{}")
    assert locate(None, cwd, {}).path == cwd / ".aether" / "model-profiles.yaml"
    env = locate(None, cwd, {"AETHER_MODEL_PROFILES": "elsewhere.yaml"})
    assert (env.path, env.rule) == (cwd / "elsewhere.yaml", "AETHER_MODEL_PROFILES")
    flag = locate("/abs/p.yaml", cwd, {"AETHER_MODEL_PROFILES": "elsewhere.yaml"})
    assert (flag.path, flag.rule) == (Path("/abs/p.yaml"), "--profiles")


def test_a_missing_explicit_profile_is_an_error(isolated: Path) -> None:
    with pytest.raises(ProfileError, match=r"Profile not found: .*nope.yaml \(chosen by --profiles\)"):
        ProfileStore("nope.yaml").load()


def test_the_profile_is_reparsed_only_when_it_changes(aether_profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aether_mcp.profile.store as store_module

    parses = []
    real = store_module.read_profile
    monkeypatch.setattr(store_module, "read_profile", lambda *a, **k: parses.append(1) or real(*a, **k))
    store = ProfileStore()
    first, _ = store.load()
    again, _ = store.load()
    assert first is again and len(parses) == 1
    text = aether_profile.read_text().replace("builder: kimi-k2.5", "builder: glm-5")
    aether_profile.write_text(text)  # another process writes the file
    changed, _ = store.load()
    assert changed.worker_models["builder"] == "glm-5" and len(parses) == 2


def _set_many(path: str, caste: str, count: int) -> None:
    store = ProfileStore(path)
    for i in range(count):
        store.set_override(caste, f"{caste}-model-{i}")


def test_two_processes_writing_different_castes_lose_nothing(aether_profile: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_set_many, args=(str(aether_profile), caste, 25)) for caste in ("builder", "scout")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    profile, _ = ProfileStore(aether_profile).load()
    assert profile.user_overrides == {"builder": "builder-model-24", "scout": "scout-model-24"}
    assert comments(aether_profile.read_text()) == comments((DATA / "aether-1.0.yaml").read_text())


def test_edit_refuses_a_layout_it_cannot_splice() -> None:
    # An anchor shared by worker_models and user_overrides: changing one would change both.
    text = "worker_models: &m {scout: a}\nuser_overrides: *m\n"
    with pytest.raises(ProfileError, match="cannot edit safely"):
        yaml_edit.set_override(text, "scout", "b")


def test_the_written_file_keeps_its_mode(aether_profile: Path) -> None:
    os.chmod(aether_profile, 0o600)
    ProfileStore().set_override("scout", "glm-5")
    assert aether_profile.stat().st_mode & 0o777 == 0o600
