"""The code behind each subcommand that is not a part's own API: assembling a training run, evaluating a
checkpoint, sampling, the demo, benchmarks and plans. cli.py parses arguments and calls one function here (or
one function of a part)."""
