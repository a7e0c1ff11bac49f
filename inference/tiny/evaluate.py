"""`python -m inference.tiny.evaluate` still measures the bundled model: it runs tools/tiny/evaluate.py.

The evaluation is tooling and lives outside the runtime package; this keeps the documented command.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("tools.tiny.evaluate", run_name="__main__", alter_sys=True)
