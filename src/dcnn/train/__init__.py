"""Training: configuration, optimizers and schedules, the loop, checkpoints."""

from dcnn.train.config import TrainConfig, load_recipe, make_config
from dcnn.train.trainer import resume, train

__all__ = ["TrainConfig", "load_recipe", "make_config", "resume", "train"]
