"""torch's CPU threads in worker processes: one on a small machine unless DAR_TORCH_THREADS."""

from __future__ import annotations

import pytest

from dar_site.env import EnvError
from workers.models.config import ModelSettings
from workers.models.device import cpu_threads


def test_small_machines_get_one_thread_and_larger_ones_keep_torchs_default() -> None:
    assert cpu_threads(0, cores=1) == 1
    assert cpu_threads(0, cores=2) == 1
    assert cpu_threads(0, cores=16) is None


def test_a_configured_count_wins() -> None:
    assert cpu_threads(3, cores=2) == 3
    assert cpu_threads(4, cores=16) == 4


def test_the_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAR_TORCH_THREADS", raising=False)
    assert ModelSettings.from_env().torch_threads == 0
    monkeypatch.setenv("DAR_TORCH_THREADS", "2")
    assert ModelSettings.from_env().torch_threads == 2
    monkeypatch.setenv("DAR_TORCH_THREADS", "-1")
    with pytest.raises(EnvError, match="DAR_TORCH_THREADS"):
        ModelSettings.from_env()


def test_loading_a_model_on_cpu_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from workers.models.device import configure_threads

    before = torch.get_num_threads()
    try:
        configure_threads("cpu", 1)
        assert torch.get_num_threads() == 1
        configure_threads("cuda", 0)  # a GPU device leaves the CPU threads alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
