import json

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.errors import UserError
from gpt2lab.eval.hellaswag import Example, encode_examples, ending_losses, evaluate_hellaswag, read_examples
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.runtime import resolve_runtime

RT = resolve_runtime("cpu", "fp32")


def random_examples(n, seed=0, vocab=97):
    g = torch.Generator().manual_seed(seed)
    def ids(lo, hi):
        return torch.randint(0, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()
    return [Example(ids(3, 20), [ids(1, 9) for _ in range(4)], i % 4) for i in range(n)]


def reference_scores(model, ex):
    """One ending at a time, no batching, no padding: the plain definition."""
    out = []
    for ending in ex.endings:
        seq = torch.tensor(ex.context + ending)
        logits, _ = model(seq[None, :-1])
        losses = F.cross_entropy(logits[0], seq[1:], reduction="none")[len(ex.context) - 1:]
        out.append((losses.sum().item(), losses.mean().item()))
    return torch.tensor(out)


def test_batched_scores_equal_the_plain_computation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    examples = random_examples(10)
    batched = ending_losses(model, examples, RT, 64)
    for i, ex in enumerate(examples):
        assert torch.allclose(batched[i], reference_scores(model, ex), atol=1e-5)
    # accuracy from the batched, length-sorted path equals accuracy from the reference scores
    ref = torch.stack([reference_scores(model, ex) for ex in examples]).argmin(dim=1)
    labels = torch.tensor([ex.label for ex in examples])
    result = evaluate_hellaswag(model, examples, RT, 64, batch_examples=3)
    assert result["acc"] == pytest.approx((ref[:, 0] == labels).float().mean().item())
    assert result["acc_norm"] == pytest.approx((ref[:, 1] == labels).float().mean().item())


def test_long_contexts_are_cut_from_the_left():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    ex = Example(list(range(40)), [[1, 2], [3], [4, 5, 6], [7]], 0)
    scores = ending_losses(model, [ex], RT, 16)
    short = Example(list(range(40))[-(17 - 2):], [[1, 2]], 0)
    short.endings = [[1, 2]] * 4
    assert scores[0, 0, 0].item() == pytest.approx(reference_scores(model, short)[0, 0].item(), abs=1e-5)


def test_real_file_renders(tokenizer_dir, shared_file):
    from gpt2lab.tokenizer import load_tokenizer

    rows = read_examples(shared_file("data", "hellaswag", "hellaswag_val.jsonl"), limit=5)
    assert len(rows) == 5
    examples = encode_examples(rows, load_tokenizer(tokenizer_dir))
    assert all(len(e.endings) == 4 for e in examples)
    tok = load_tokenizer(tokenizer_dir)
    assert tok.decode(examples[0].endings[0]) == " " + rows[0]["endings"][0]


@pytest.mark.parametrize(
    "line,message",
    [
        ("not json", "not valid JSON"),
        (json.dumps({"ctx": "a", "endings": ["x", "y"], "label": 0}), "four 'endings'"),
        (json.dumps({"ctx": "a", "endings": ["w", "x", "y", "z"], "label": 7}), "label"),
    ],
)
def test_malformed_files(tmp_path, line, message):
    (tmp_path / "h.jsonl").write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        read_examples(tmp_path / "h.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no HellaSwag examples"):
        read_examples(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("where, said", [("/dev/urandom", "is not a regular file"), ("folder", "is a folder"),
                                         ("missing", "does not exist")])
def test_eval_inputs_that_are_not_files_say_what_they_are(tmp_path, where, said):
    """/dev/urandom was reported as missing ('does not exist'), and a folder too."""
    from gpt2lab.commands.eval import read_text

    (tmp_path / "folder").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    for read in (read_examples, read_text):
        with pytest.raises(UserError, match=said):
            read(path)


def test_scoring_never_builds_the_whole_logits_and_matches_them():
    """HellaSwag's ending losses and token accuracy built the (rows, width, vocab) logits at once; per-token
    scores come chunk by chunk and equal the plain head's."""
    import torch
    import torch.nn.functional as F

    from gpt2lab.model import GPT, GPTConfig

    torch.manual_seed(0)
    for cap in (None, 15.0):
        model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, logit_softcap=cap)).eval()
        x = torch.randint(0, 300, (3, 32))
        y = torch.randint(0, 300, (3, 32))
        y[0, :4] = -1
        logits, _ = model(x)
        expected = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none")
        calls = []
        hook = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
        losses, correct = model(x, y, per_token=True, loss_chunk=7)[1]
        hook.remove()
        assert calls == [] and torch.allclose(losses, expected, atol=1e-5)
        assert torch.equal(correct, logits.argmax(-1) == y)
