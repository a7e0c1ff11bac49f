"""The bundled tiny model's files: the trained pipelines (model/) and the word list tokenizer of random test models.

Only data lives here, since the worker loads it; the scripts that make and measure it are in tools/tiny.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).with_name("model")
# The BPE tokenizer random test and bench pipelines are built with (tools/tiny/build.py, inference/archs).
TOKENIZER_DIR = Path(__file__).with_name("tokenizer")
