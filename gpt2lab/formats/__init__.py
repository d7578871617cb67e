"""Every file gpt2lab writes and reads back is hostile input: a user, a tool or a crash may have changed it.

Each on-disk format is parsed in one place, with a size limit, a nesting-depth limit and typed validation; what
does not pass is one line (`BadFile`, a UserError: exit 2) naming the file, the field, what was found and what
was expected. Inside a checkpoint the same line makes the checkpoint corrupt (set aside), never a traceback.

| format                               | reader                                  | size limit | depth | schema             |
|--------------------------------------|-----------------------------------------|------------|-------|--------------------|
| checkpoint COMPLETE manifest         | checkpoint.read_marker                  | 16 MB      | 8     | schemas.Manifest   |
| checkpoint state.json (+ tensors)    | checkpoint.load_state                   | 256 MB     | 64    | schemas.TrainingState |
| checkpoint / run config.json         | checkpoint.load_config, commands.train  | 1 MB       | 8     | config.from_dict   |
| run record .gpt2lab-run.json         | training.trainer (ownership)            | 1 MB       | 8     | schemas.RunRecord  |
| data meta.json                       | data.shards.read_meta                   | 64 MB      | 8     | schemas.DataMeta   |
| prepare progress (resume a prepare)  | data.prepare                            | 64 MB      | 8     | schemas.PrepareProgress |
| metrics.jsonl lines                  | metrics.logger.read_metrics             | 1 MB/line  | 4     | scalars kept, rest dropped |
| JSON-lines inputs, HellaSwag rows    | data.sources.json_lines                 | 16 MB/line | 32    | per use            |
| HF config.json on import             | interop.hf                              | 1 MB       | 16    | transformers + _config_of |
| YAML / TOML / JSON config files      | config.load_file                        | 1 MB       | 8     | config.coerce      |
| CPU peak cache, report inputs        | metrics.cpu_peak, report.notebook       | 1 MB       | 8     | tolerant: bad = absent |
"""

from .json_file import BadFile, parse_json, read_json
from .schemas import check

__all__ = ["BadFile", "check", "parse_json", "read_json"]
