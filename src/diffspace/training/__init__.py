"""Training: the loop (`train`), EMA, batch order, mixed precision and torchrun support.

`train(cfg, run_dir)` trains or resumes a run directory holding `config.yaml`, `metrics.csv`,
`samples/step-XXXXXX.png`, `samples/final.png`, `checkpoints/step-XXXXXXXX.pt` and, when
training ends, the model folder `model/` (`diffspace.model`: config, EMA weights with every process buffer, card).
"""

from diffspace.training.ema import EMA, ema_decay
from diffspace.training.logs import METRICS_FILE, TensorBoardMissing, read_metrics
from diffspace.training.loop import (
    FINAL_GRID, RESUMABLE, TrainingError, TrainingInterrupted, TrainResult, train, warmup_factor,
)

__all__ = [
    "EMA", "FINAL_GRID", "METRICS_FILE", "RESUMABLE", "TensorBoardMissing", "TrainResult", "TrainingError",
    "TrainingInterrupted", "ema_decay", "read_metrics", "train", "warmup_factor",
]
