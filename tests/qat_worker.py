"""A QAT run in its own process, for the SIGKILL/resume test.

Usage: python qat_worker.py CHECKPOINT_DIR OUT.safetensors STEPS [SLEEP_S]
Trains tiny-ctc (fake-quantized at 4 bits) with checkpoints every 2 steps; sleeps SLEEP_S
before each step so that a test can kill it between checkpoints; saves final weights.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import prepare_
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model


def main() -> None:
    ckpt, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    rng = np.random.default_rng(0)
    data = [
        Utterance(id=f"1-1-{i:04d}", text=["THE CAT SAT", "A DOG RAN"][i % 2],
                  audio=(0.1 * rng.standard_normal(4000 + 400 * i)).astype(np.float32))
        for i in range(6)
    ]
    model = load_model("tiny-ctc")
    teacher = build_teacher_cache(model, data, batch_size=3, progress=False)
    prepare_(model.model, allocation_for(model, 4))
    train(model, data, steps=steps, batch_size=2, seed=11,
          config=TrainConfig(lr=1e-3, checkpoint_every=2, checkpoint_min_interval_s=0),
          teacher=teacher,
          checkpoint_dir=ckpt, on_step=lambda step: time.sleep(pause), progress=False)
    state = {k: v.detach().contiguous() for k, v in model.model.state_dict().items()}
    save_file(state, str(out))


if __name__ == "__main__":
    main()
