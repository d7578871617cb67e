
import numpy as np
import pytest
import torch

from gpt2lab.data.loader import BatchStream, Windows
from gpt2lab.errors import UserError


def test_windows_shift_and_stay_inside_shards(data_dir):
    w = Windows(data_dir, "train", 32)
    # three shards of 7000, 7000 and 6000 tokens: (n - 1) // 32 windows each
    assert len(w) == 218 + 218 + 187
    stream = BatchStream(w, 8, seed=1)
    x, y = stream.next_batch(torch.device("cpu"))
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    full = np.concatenate([np.asarray(s) for s in w.shards])
    last = w.tokens(np.array([217, 218]))  # last window of shard 0, first of shard 1
    assert np.array_equal(last[0], full[217 * 32 : 218 * 32 + 1])
    assert np.array_equal(last[1], full[7000 : 7000 + 33])


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    w = Windows(data_dir, "train", 32)
    a, b, c = BatchStream(w, 8, 1), BatchStream(w, 8, 1), BatchStream(w, 8, 2)
    seq_a = [a.next_indices() for _ in range(5)]
    assert all(np.array_equal(p, q) for p, q in zip(seq_a, [b.next_indices() for _ in range(5)]))
    assert not all(np.array_equal(p, q) for p, q in zip(seq_a, [c.next_indices() for _ in range(5)]))


def test_every_window_once_per_epoch_and_reshuffled(data_dir):
    w = Windows(data_dir, "train", 32)
    n = len(w)
    stream = BatchStream(w, 7, seed=3)  # 7 does not divide 623: batches straddle epochs
    taken = np.concatenate([stream.next_indices() for _ in range(3 * n // 7 + 1)])
    for epoch in range(3):
        chunk = taken[epoch * n : (epoch + 1) * n]
        assert sorted(chunk.tolist()) == list(range(n))
    assert not np.array_equal(taken[:n], taken[n : 2 * n])


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_take_disjoint_parts_of_the_same_global_batch(data_dir, world):
    w = Windows(data_dir, "train", 32)
    single = BatchStream(w, 4 * world, seed=5)
    ranks = [BatchStream(w, 4, seed=5, rank=r, world_size=world) for r in range(world)]
    for _ in range(200):  # crosses an epoch boundary
        parts = [r.next_indices() for r in ranks]
        assert np.array_equal(np.concatenate(parts), single.next_indices())
        assert len(set(np.concatenate(parts).tolist())) == 4 * world


def test_resume_continues_exactly(data_dir):
    w = Windows(data_dir, "train", 32)
    uninterrupted = BatchStream(w, 8, seed=9)
    first = [uninterrupted.next_indices() for _ in range(100)]
    rest = [uninterrupted.next_indices() for _ in range(100)]
    interrupted = BatchStream(w, 8, seed=9)
    for _ in range(100):
        interrupted.next_indices()
    resumed = BatchStream(w, 8, seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(rest, [resumed.next_indices() for _ in range(100)]))
    assert not any(np.array_equal(a, b) for a, b in zip(first, rest))  # the resumed stream did not start over


def test_resume_refuses_other_data(data_dir):
    w32, w16 = Windows(data_dir, "train", 32), Windows(data_dir, "train", 16)
    with pytest.raises(UserError, match="same data directory"):
        BatchStream(w16, 8, 0).load_state_dict(BatchStream(w32, 8, 0).state_dict())


def test_context_longer_than_data(tmp_path):
    from tests.helpers import make_data_dir

    d = make_data_dir(tmp_path / "d", val_tokens=20)
    with pytest.raises(UserError, match="too few for one window"):
        Windows(d, "val", 32)


@pytest.mark.parametrize("world", [1, 2])
def test_prefetch_gives_the_same_batches_and_resumes_exactly(data_dir, world):
    w = Windows(data_dir, "train", 32)
    cpu = torch.device("cpu")
    plain = BatchStream(w, 8, seed=4, world_size=world, rank=world - 1)
    ahead = BatchStream(w, 8, seed=4, world_size=world, rank=world - 1, prefetch=3)
    for _ in range(100):  # past an epoch boundary
        assert torch.equal(plain.next_batch(cpu)[0], ahead.next_batch(cpu)[0])
    state = ahead.state_dict()  # the thread has fetched further, but the state is what was handed out
    assert state["position"] == plain.position
    resumed = BatchStream(w, 8, seed=0, world_size=world, rank=world - 1, prefetch=2)
    resumed.load_state_dict(state)
    for _ in range(20):
        assert torch.equal(plain.next_batch(cpu)[1], resumed.next_batch(cpu)[1])
    ahead.close()
    resumed.close()


def test_document_aligned_windows(tmp_path):
    eot = 99
    docs = [[eot] + list(range(1, n)) for n in (5, 40, 12, 70)]
    tokens = np.array([t for d in docs for t in d])
    _shards_dir(tmp_path / "d", [tokens], eot)
    w = Windows(tmp_path / "d", "train", 16, align_documents=True, eot=eot)
    windows = w.tokens(np.arange(len(w)))
    # documents start at 0, 5, 45, 57 (127 tokens); each is tiled from its start every 16 tokens,
    # and a window (17 tokens) must fit in the shard
    starts = [0, 5, 21, 37, 45, 57, 73, 89, 105]
    assert len(w) == len(starts)
    for window, s in zip(windows, starts):
        assert np.array_equal(window, tokens[s : s + 17])
    assert all(windows[i][0] == eot for i in (0, 1, 4, 5))


def test_document_masking_stops_attention_at_the_separator():
    from gpt2lab.data.loader import document_ids
    from gpt2lab.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    eot = 49
    x = torch.randint(0, 49, (1, 16))
    x[0, 6] = eot  # a second document starts at position 6
    changed = x.clone()
    changed[0, :6] = torch.randint(0, 49, (6,))  # rewrite the first document only
    with torch.no_grad():
        a = model(x, doc_ids=document_ids(x, eot))[0]
        b = model(changed, doc_ids=document_ids(changed, eot))[0]
        c = model(changed)[0]
    assert torch.allclose(a[0, 6:], b[0, 6:], atol=1e-6)  # the second document cannot see the first
    assert not torch.allclose(a[0, 6:], c[0, 6:], atol=1e-4)  # without the mask it can
    # with a single document the mask is the plain causal mask
    single = torch.randint(0, 49, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(single, doc_ids=document_ids(single, eot))[0], model(single)[0], atol=1e-6)


def _shards_dir(path, shards, eot=None):
    from gpt2lab.data.shards import write_shard
    import json as _json

    path.mkdir()
    listed = []
    for i, tokens in enumerate(shards):
        write_shard(path / f"train_{i:06d}.bin", np.asarray(tokens))
        listed.append({"file": f"train_{i:06d}.bin", "tokens": len(tokens)})
    meta = {"tokenizer": {"n_vocab": 65535, "eot": eot},
            "splits": {"train": {"tokens": sum(len(t) for t in shards), "documents": 1, "shards": listed}}}
    (path / "meta.json").write_text(_json.dumps(meta))
    return path


def test_reach_is_the_share_of_tokens_some_window_reads(tmp_path):
    # every token is its own position, so what the windows read can be counted from their contents
    sizes, position, shards = (40, 100, 33, 20, 70), 0, []
    for n in sizes:
        shards.append(np.arange(position, position + n))
        position += n
    w = Windows(_shards_dir(tmp_path / "d", shards), "train", 32)
    read = np.unique(w.tokens(np.arange(len(w))))
    assert w.reach() == pytest.approx(len(read) / sum(sizes))  # 33 + 97 + 33 + 0 + 65 of 263
    assert "reach only 87% of the train split" in w.reach_note() and "--shard-tokens" in w.reach_note()
    # long shards: the tails are a sliver, and nothing is said
    assert Windows(_shards_dir(tmp_path / "e", [np.arange(5000), np.arange(5000, 9000)]), "train", 32).reach_note() is None


def test_reach_counts_overlapping_document_windows_once(tmp_path):
    eot = 99
    docs = [[eot] + list(range(1, n)) for n in (5, 40, 12, 70)]  # as in test_document_aligned_windows
    w = Windows(_shards_dir(tmp_path / "d", [[t for d in docs for t in d]], eot), "train", 16,
                align_documents=True, eot=eot)
    assert w.reach() == pytest.approx(122 / 127)  # windows start at 0 ... 105 and overlap; 122..126 are unread
