"""Checkpoints are written atomically and a damaged one is detected, never trusted."""
import torch

from transferscale.pretrain import load_checkpoint, lr_at, random_shift, save_checkpoint, subset_indices


def test_roundtrip_and_corruption(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"w": torch.arange(10.0), "step": 3})
    assert load_checkpoint(path)["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_checkpoint(path) is None
    path.write_bytes(b"")
    assert load_checkpoint(path) is None
    assert load_checkpoint(tmp_path / "missing.pt") is None


def test_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and lrs[10] == 1.0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_random_shift_moves_content_and_fills_background():
    x = torch.full((4, 1, 8, 8), -1.0)
    x[:, 0, 4, 4] = 1.0
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for img in out[:, 0]:
        assert (img == 1.0).sum() == 1 and (img == -1.0).sum() == 63
        r, c = (img == 1.0).nonzero()[0].tolist()
        assert abs(r - 4) <= 2 and abs(c - 4) <= 2


def test_subsets_nested_and_stratified():
    import numpy as np

    y = np.repeat(np.arange(4), 50)
    small, large = subset_indices(y, 0.1, 0), subset_indices(y, 0.3, 0)
    assert set(small) <= set(large)
    assert np.bincount(y[small]).tolist() == [5] * 4 and np.bincount(y[large]).tolist() == [15] * 4


def test_slow_steps_are_checkpointed_by_time_and_resume_to_the_same_weights(tmp_path):
    """checkpoint_every far above the steps: the time rule alone writes checkpoints, and a run resumed from
    one ends with exactly the weights of an uninterrupted run."""
    import numpy as np

    from transferscale.pretrain import train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(4), 16).astype(np.int64)
    config = {"family": "resnet", "shape": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 8], "stem_width": 4},
              "training": {"data_fraction": 1.0, "steps": 6, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0,
                           "warmup_fraction": 0.0, "max_shift": 1, "seed": 0}}
    reference = train(config, x, y, 4, tmp_path / "ref.pt").model.state_dict()

    path = tmp_path / "run.pt"

    class Stop(Exception):
        pass

    def stop_after_four(step, steps, loss):
        if step == 4:
            raise Stop  # a kill after step 4: the checkpoint of step 3 is on disk

    try:
        train(config, x, y, 4, path, checkpoint_every=10**6, checkpoint_seconds=0.0, on_step=stop_after_four)
    except Stop:
        pass
    state = load_checkpoint(path)
    assert state is not None and not state["complete"] and state["step"] == 3  # saved after each step
    resumed = train(config, x, y, 4, path)
    assert resumed.resumed_from == 3
    for name, value in reference.items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_a_temporary_file_left_by_a_killed_write_is_swept_by_the_next_write(tmp_path):
    import os
    import time

    from transferscale.pretrain import STALE_TMP_SECONDS

    path = tmp_path / "run.pt"
    old = tmp_path / ".run.pt.abc123.tmp"  # what a kill -9 during torch.save's write leaves
    fresh = tmp_path / ".run.pt.def456.tmp"  # a write in progress in another process: left alone
    for tmp in (old, fresh):
        tmp.write_bytes(b"partial")
    long_ago = time.time() - STALE_TMP_SECONDS - 5
    os.utime(old, (long_ago, long_ago))
    save_checkpoint(path, {"step": 1})
    assert not old.exists() and fresh.exists() and load_checkpoint(path)["step"] == 1
