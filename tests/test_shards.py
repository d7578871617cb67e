import json

import numpy as np
import pytest

from gpt2lab.data.shards import HEADER_BYTES, MAGIC, read_shard, split_shards, write_shard
from gpt2lab.errors import UserError


def test_llmc_layout_round_trip(tmp_path):
    tokens = np.array([50256, 15496, 995, 0, 65535], dtype=np.uint16)
    write_shard(tmp_path / "s.bin", tokens)
    raw = (tmp_path / "s.bin").read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert (header[0], header[1], header[2]) == (MAGIC, 1, 5)
    assert np.array_equal(np.frombuffer(raw[HEADER_BYTES:], dtype="<u2"), tokens)
    assert np.array_equal(read_shard(tmp_path / "s.bin"), tokens)
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_and_foreign_shards_are_refused(tmp_path):
    write_shard(tmp_path / "s.bin", np.arange(100, dtype=np.uint16))
    data = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "s.bin").write_bytes(data[:-10])
    with pytest.raises(UserError, match="truncated"):
        read_shard(tmp_path / "s.bin")
    (tmp_path / "s.bin").write_bytes(b"\x00" * 2000)
    with pytest.raises(UserError, match="not a gpt2lab/llm.c token shard"):
        read_shard(tmp_path / "s.bin")
    (tmp_path / "s.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="shorter than its header"):
        read_shard(tmp_path / "s.bin")


def test_meta_must_agree_with_shards(data_dir):
    meta = json.loads((data_dir / "meta.json").read_text())
    meta["splits"]["train"]["shards"][0]["tokens"] += 1
    (data_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="inconsistent"):
        split_shards(data_dir, "train")


def test_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        split_shards(tmp_path / "nope", "train")
    with pytest.raises(UserError, match="not a prepared data directory"):
        split_shards(tmp_path, "train")
