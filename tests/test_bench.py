import json

import pytest
import torch

from gpt2lab.cli import main


@pytest.mark.slow
def test_bench_interleaves_contenders_and_saves_only_when_asked(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--preset", "tiny", "--micro-batch", "2", "--steps", "1", "--rounds", "2", "--warmup", "0",
            "--device", "cpu", "--seq-len", "32", "--compile", "off"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gpt2lab/hf:" in out and "gpt2lab/hf-matched:" in out
    assert not list(tmp_path.rglob("*.json"))  # nothing written unless --save
    assert main(args + ["--save", str(tmp_path / "results")]) == 0
    report = json.loads(next((tmp_path / "results").glob("bench_*.json")).read_text())
    assert {"device", "threads", "torch", "date", "commit", "results", "ratios"} <= report.keys()
    assert [r["contender"] for r in report["results"]] == ["gpt2lab", "gpt2lab-fp32", "hf", "hf-matched"]
    for r in report["results"]:
        assert len(r["rounds"]) == 2 and r["tokens_per_sec"] == pytest.approx(sum(r["rounds"]) / 2, abs=0.2)
        assert r["mfu"] is not None and "measured" in r["peak_source"] and "compile_s" not in r
    assert report["results"][1]["precision"] == report["results"][2]["precision"] == "fp32"


def test_bench_modern_uses_the_matching_transformers_architecture():
    pytest.importorskip("transformers")
    from gpt2lab.commands.bench import _hf_model
    from gpt2lab.config import build_config

    model = _hf_model(build_config(preset="gpt2-124m-modern", sets=["model.n_layer=1"]).model)
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("form", ["in place (eager CPU)", "fusable (GPU, compiled)"])
def test_chunked_head_loss_equals_the_plain_head(form, monkeypatch):
    from gpt2lab.model import GPT, GPTConfig
    from gpt2lab.model import loss as head

    if form.startswith("fusable"):  # the form a GPU or a compiled run takes, run here on the CPU
        monkeypatch.setattr(head, "_in_place_chunks", lambda h: False)

    for switches in ({}, dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False),
                     dict(logit_softcap=15.0, mlp="relu2")):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, **switches))
        x = torch.randint(0, 300, (4, 32))
        y = x.clone()
        y[0, :5] = -1  # ignored targets
        results = []
        for chunk in (None, 37):
            model.zero_grad()
            logits, loss = model(x, y, loss_chunk=chunk)
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in model.parameters()], logits))
        (plain, plain_grads, _), (chunked, chunked_grads, no_logits) = results
        assert abs(plain - chunked) < 1e-5 and no_logits is None
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, chunked_grads))
        with torch.no_grad():  # evaluation: the same loss, chunk by chunk, no gradients kept
            assert abs(model(x, y, loss_chunk=37)[1].item() - plain) < 1e-5


def test_the_two_forms_of_the_chunked_loss_agree_under_bf16_autocast():
    """The eager CPU form and the fusable form compute the same loss and gradients from the same bf16 logits."""
    from gpt2lab.model import loss as head

    torch.manual_seed(0)
    h = torch.randn(70, 16)
    w = torch.randn(500, 16) * 0.3
    t = torch.randint(0, 500, (70,))
    t[::9] = -1
    valid = (t != -1).float()
    for cap in (None, 15.0):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grad = head._chunk_in_place(h, w, t, valid, cap)
            logits, squashed, dtype = head._chunk_logits(h, w, cap)
            ref_loss, lse = head._chunk_loss(logits, t, valid)
            ref_grad = head._chunk_grad(logits, lse, t, valid, squashed, dtype)
        assert grad.dtype == ref_grad.dtype == torch.bfloat16
        assert torch.allclose(loss, ref_loss, rtol=1e-6)
        assert torch.allclose(grad.float(), ref_grad.float(), atol=1e-2 * ref_grad.float().abs().max().item())
        assert (grad[t == -1] == 0).all()


def test_steal_is_read_from_proc_stat_and_a_busy_host_is_warned_about(tmp_path, monkeypatch, capsys):
    from gpt2lab.commands import bench
    from gpt2lab.metrics import steal

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    assert steal.cpu_ticks(stat) == (35, 1000)  # guest time (7) is inside user time: not added twice
    assert steal.steal_share((35, 1000), (95, 1400)) == 0.15
    assert steal.steal_share((35, 1000), (35, 1000)) is None and steal.steal_share(None, (1, 2)) is None
    for damaged in ("", "intr 5\n", "cpu 1 2 x 4 5 6 7 8\n", "cpu 1 2 3\n"):
        stat.write_text(damaged)
        assert steal.cpu_ticks(stat) is None
    assert steal.cpu_ticks(tmp_path / "missing") is None  # not Linux: no figure, never a guess

    readings = iter([(0, 1000), (300, 2000)])  # 30% of the CPU time stolen while timing
    monkeypatch.setattr(bench, "cpu_ticks", lambda: next(readings))
    report = bench.run_bench(bench.BenchOptions(preset="tiny", micro_batch=1, seq_len=16, steps=1, rounds=1, warmup=0,
                                                device="cpu", compile="off", contenders=("gpt2lab",)))
    assert report["cpu_steal"] == 0.3 and "took 30% of this VM's CPU time" in capsys.readouterr().out


@pytest.mark.slow
def test_off_the_cpu_contenders_run_one_at_a_time_with_their_own_peak(monkeypatch):
    """N7 + W2: four resident gpt2-124m contenders do not fit in 24 GB, and one never-reset peak was reported for
    all. Sequential mode (a GPU's) is run here on the CPU; the peak reading is checked with the CUDA double."""
    from gpt2lab.commands.bench import BenchOptions, run_bench

    events = []
    import gpt2lab.commands.bench as bench

    real_build = bench._build
    monkeypatch.setattr(bench, "_build", lambda name, *a: events.append(("build", name)) or real_build(name, *a))
    monkeypatch.setattr(bench, "free_memory", lambda device: events.append(("free",)))
    o = BenchOptions(preset="tiny", micro_batch=2, seq_len=32, steps=1, rounds=2, warmup=0, device="cpu",
                     compile="off", contenders=("gpt2lab", "gpt2lab-fp32"), interleave=False)
    report = run_bench(o, echo=lambda *_: None)
    assert events == [("build", "gpt2lab"), ("free",), ("build", "gpt2lab-fp32"), ("free",)]
    assert all(len(r["rounds"]) == 2 for r in report["results"])

    from tests.cuda_double import install

    machine = install(monkeypatch)
    machine.gpus[0].allocated, machine.gpus[0].peak = 2**30, 9 * 2**30  # the previous contender's peak
    bench.reset_peak_memory(torch.device("cuda:0"))
    assert bench.peak_memory_gb(torch.device("cuda:0")) == 1.0 and ("reset_peak", 0) in machine.calls


def test_an_fp16_contender_steps_with_a_grad_scaler():
    """W4: on fp16 GPUs the bench timed a step without the GradScaler that `train` uses."""
    from gpt2lab.commands.bench import Contender
    from gpt2lab.config import build_config
    from gpt2lab.runtime import Runtime

    cfg = build_config(preset="tiny", sets=["data.seq_len=16"])
    c = Contender("gpt2lab", cfg, Runtime(device=torch.device("cpu"), precision="fp16"), 2, None)
    assert isinstance(c.scaler, torch.amp.GradScaler)
    scale = c.scaler.get_scale()
    c.step()
    assert c.scaler.get_scale() <= scale  # it took part in the step (scale kept or lowered after an overflow)
    assert Contender("gpt2lab", cfg, Runtime(device=torch.device("cpu"), precision="fp32"), 2, None).scaler is None


def test_reprobe_measures_the_cpu_peak_afresh_once(monkeypatch, tmp_path):
    import gpt2lab.metrics.cpu_peak as cpu_peak
    import gpt2lab.metrics.steal as steal
    from gpt2lab.commands.bench import BenchOptions, run_bench

    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_peak, "_measured", {})  # an earlier test's unstable reading (a busy machine) is not this one's
    monkeypatch.setattr(steal, "cpu_ticks", lambda path=None: None)
    monkeypatch.setattr(steal, "idle_ticks", lambda path=None: None)
    probes = []
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: probes.append(dtype) or 1e12)
    o = BenchOptions(preset="tiny", micro_batch=2, seq_len=32, steps=1, rounds=1, warmup=0, device="cpu",
                     precision="fp32", compile="off", contenders=("gpt2lab", "gpt2lab-fp32"))
    run_bench(o, echo=lambda *_: None)
    cached = len(probes)
    run_bench(o, echo=lambda *_: None)
    assert len(probes) == cached  # the cache
    run_bench(BenchOptions(**{**o.__dict__, "reprobe": True}), echo=lambda *_: None)
    assert len(probes) == 2 * cached  # afresh, once for fp32 though two contenders use it


def test_a_saved_bench_names_its_commit_and_whether_the_code_differs_from_it(tmp_path):
    # The H200 run's JSON named the session's starting commit while it ran newer, uncommitted-there code.
    import subprocess

    from gpt2lab.commands.bench import source_version

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert source_version(tmp_path) is None  # not a checkout
    git("init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    git("add", "model.py")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked files are not the code\n")
    assert source_version(tmp_path) == head
    (tmp_path / "model.py").write_text("a = 2\n")
    assert source_version(tmp_path) == head + "+changes"


def test_a_bench_on_a_machine_without_git_saves_without_a_commit(tmp_path, monkeypatch):
    # `--save` runs after the whole benchmark: a missing git must not throw the result away
    from gpt2lab.commands.bench import source_version

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no git on it
    assert source_version(tmp_path) is None
