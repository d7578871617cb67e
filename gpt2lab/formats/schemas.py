"""The shapes of the JSON files gpt2lab writes, as pydantic models: strict types (no "3" for 3, no true for 1),
bounds where a value has them, extra fields allowed (a newer gpt2lab may add some). `check` validates and
returns the value unchanged, or raises BadFile naming the file, the field, what was found and what was expected.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .json_file import BadFile

Count = Annotated[int, Field(ge=0, le=1 << 62)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


# --- checkpoint ------------------------------------------------------------------------------------------------

class FileEntry(Shape):
    bytes: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Health(Shape):
    weights_finite: bool = True


class Manifest(Shape):
    """COMPLETE: written last into a checkpoint folder."""
    format: Annotated[int, Field(ge=0, le=1)]
    step: Count
    files: dict[str, FileEntry] | None
    health: Health = Health()
    run: str | None = None
    weights_only: bool = False  # thinned (gpt2lab thin): the training state was dropped, the weights kept


class LoaderState(Shape):
    position: Count
    seed: Annotated[int, Field(ge=0, le=1 << 64)]
    windows: Count


class GuardState(Shape):
    history: list[float] = []
    count: Count = 0


class PlanState(Shape):
    planned: Count
    budget_s: Seconds
    warmup_end: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    progress: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    reserve_s: Seconds = 0.0


class TrainingState(Shape):
    """state.json (+ state.safetensors), after unpacking: what a resume reads."""
    step: Count
    optimizer: dict[str, Any] | None = None
    loader: LoaderState | None = None
    scaler: dict[str, Any] | None = None
    rng: Any = None
    rng_ranks: list[Any] | None = None
    loss_guard: GuardState | None = None
    elapsed: Seconds = 0.0
    cpu_seconds: Seconds = 0.0
    lr_scale: Scale = 1.0
    rollbacks: Count = 0
    plan: PlanState | None = None
    run_id: str | None = None
    data_fingerprint: str | None = None


# --- run folder and data -----------------------------------------------------------------------------------------

class RunRecord(Shape):
    """RUN/.gpt2lab-run.json: the SHA-256 of each file gpt2lab wrote into the run folder."""
    files: dict[str, str]


class TokenizerMeta(Shape):
    n_vocab: Annotated[int, Field(ge=1, le=1 << 32)]
    eot: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _eot_in_vocab(self):
        if self.eot is not None and self.eot >= self.n_vocab:
            raise ValueError(f"tokenizer.eot {self.eot} is not below n_vocab {self.n_vocab}")
        return self


class ShardEntry(Shape):
    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")]  # a plain name in the folder
    tokens: Count


class SplitMeta(Shape):
    shards: list[ShardEntry]


class DataMeta(Shape):
    """A data folder's meta.json: the tokenizer and each split's shards (what the loader reads)."""
    tokenizer: TokenizerMeta
    splits: dict[Literal["train", "val"], SplitMeta]


class ShardProgress(Shape):
    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]  # a name in the folder, never a path out of it
    tokens: Count


class SplitProgress(Shape):
    shards: list[ShardProgress] = []
    documents: Count = 0
    carry: Count = 0


class PrepareProgress(Shape):
    """A prepare's working folder: how far an interrupted prepare got."""
    fingerprint: str
    splits: dict[str, SplitProgress]


# --- evaluation data ---------------------------------------------------------------------------------------------

class HellaSwagRow(Shape):
    """One row of hellaswag_val.jsonl: a context, four endings, the right one's index."""
    ctx: str
    endings: Annotated[list[str], Field(min_length=4, max_length=4)]
    label: Annotated[int, Field(ge=0, le=3)]


def _found(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(value, shape: type[Shape], where: str):
    """`value` if it has the shape, else BadFile: `where: field a.b is X, expected Y`."""
    try:
        shape.model_validate(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in error["loc"]) or "the top level"
        expected = error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
        expected = expected[:1].lower() + expected[1:].replace(" after validation", "")
        raise BadFile(f"{where}: field {field} is {_found(error.get('input'))}, expected {expected}") from None
    return value
