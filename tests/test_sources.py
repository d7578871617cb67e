"""Hugging Face dataset sources, tested through datasets' own json, parquet and text builders on local files:
the same code that streams hub datasets for users."""

import json

import numpy as np
import pytest

from gpt2lab.data import PrepareOptions, prepare, split_shards
from gpt2lab.data.sources import HFDataset, open_sources, wikitext_articles
from gpt2lab.errors import UserError
from gpt2lab.tokenizer import load_tokenizer

datasets = pytest.importorskip("datasets")

WIKI = """ = Valkyria Chronicles = 

 Senjo no Valkyria is a tactical role playing game . 
 It was released in 2011 . 

 = = Gameplay = = 

 The game is played in turns . 
 = Tower Building = 

 The tower stands on a hill . 
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_wikitext_rows_become_whole_articles(tmp_path):
    (tmp_path / "wiki.train.raw").write_text(WIKI)
    (tmp_path / "wiki.valid.raw").write_text(" = Other = \n\n Text . \n")
    source = HFDataset("text", data_files={"train": str(tmp_path / "wiki.train.raw"),
                                           "validation": str(tmp_path / "wiki.valid.raw")}, processor=wikitext_articles)
    docs = list(source)
    assert [split for split, _ in docs] == ["val", "train", "train"]  # the dataset's own validation split is kept
    assert docs[1][1].startswith(" = Valkyria Chronicles = ") and "= = Gameplay = =" in docs[1][1]
    assert docs[2][1].startswith(" = Tower Building = ")
    assert HFDataset("Salesforce/wikitext", "wikitext-103-raw-v1").processor is wikitext_articles  # the processor table
    assert HFDataset("someone/wikitext-like-notes").processor is None  # a name merely containing "wikitext" is not


def test_json_builder_without_validation_leaves_the_split_to_gpt2lab(tmp_path):
    rows = [{"text": f"document {i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = list(HFDataset("json", data_files={"train": str(tmp_path / "d.jsonl")}))
    assert docs == [(None, f"document {i}") for i in range(5)]


def test_local_parquet_goes_through_the_datasets_builder(tmp_path, tokenizer_dir):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"Parquet document number {i} with some words." for i in range(40)]
    pq.write_table(pa.table({"text": texts, "id": list(range(40))}), tmp_path / "part.parquet")
    sources = open_sources([str(tmp_path / "part.parquet")])
    assert isinstance(sources[0], HFDataset) and sources[0].path == "parquet"
    meta = prepare([str(tmp_path / "part.parquet")], str(tmp_path / "out"),
                   PrepareOptions(tokenizer=tokenizer_dir, quiet=True, val_fraction=0.25))
    assert meta["split"]["method"] == "documents"
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 40


def test_prepare_keeps_a_sources_validation_split(tmp_path, tokenizer_dir, monkeypatch):
    import gpt2lab.data.sources as sources_module

    (tmp_path / "wiki.train.raw").write_text(WIKI * 3)
    (tmp_path / "wiki.valid.raw").write_text(" = Held Out = \n\n Only in validation . \n")
    files = {"train": str(tmp_path / "wiki.train.raw"), "validation": str(tmp_path / "wiki.valid.raw")}
    real = sources_module.HFDataset
    monkeypatch.setattr(sources_module, "HFDataset",
                        lambda name, config=None, **kw: real("text", data_files=files, processor=wikitext_articles))
    meta = prepare(["hf:Salesforce/wikitext:wikitext-103-raw-v1"], str(tmp_path / "out"),
                   PrepareOptions(tokenizer=tokenizer_dir, quiet=True))
    assert meta["split"]["method"] == "source"
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 6
    tok = load_tokenizer(tokenizer_dir)
    val = tok.decode(np.concatenate(split_shards(tmp_path / "out", "val")).tolist())
    assert "Only in validation" in val


def test_unreachable_hub_dataset_is_a_clear_error(tmp_path):
    """In a process of its own, with HF_HUB_OFFLINE set before the hub library reads it: no network is touched."""
    import os
    import subprocess
    import sys

    code = ("from gpt2lab.data.sources import HFDataset\n"
            "from gpt2lab.errors import UserError\n"
            "try:\n    list(HFDataset('no-such-user/no-such-dataset'))\n"
            "except UserError as e:\n    print('ERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERROR cannot open hf:no-such-user/no-such-dataset" in out.stdout, out.stderr[-2000:]
    with pytest.raises(UserError, match="hf:NAME"):
        open_sources(["hf:"])
