"""Device-only experiment (not toolkit code): records/profile_step.py with one inductor option changed, to see what
it is worth per step before any of it enters eval_ngram.compile_graph.

    python .devdata/profile_inductor.py mix_order|coordinate_descent|both PROFILE_STEP_ARGS...
"""
import os
import sys

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "records")]
import torch  # noqa: E402

import eval_ngram  # noqa: E402
import profile_step  # noqa: E402
import train_gpt  # noqa: E402

option = sys.argv.pop(1)
assert option in ("mix_order", "coordinate_descent", "both"), option


def compile_graph(fn):
    torch._inductor.config.triton.mix_order_reduction = option in ("mix_order", "both")
    torch._inductor.config.coordinate_descent_tuning = option in ("coordinate_descent", "both")
    return torch.compile(fn, dynamic=False, fullgraph=True)


eval_ngram.compile_graph = compile_graph
eval_ngram.run_script(profile_step.profile, train_gpt.ConfigError)
