"""Training an hf_xmodal model with `transformers.Trainer`: the callback that calls its hooks."""

from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)


class TrainingHooksCallback(TrainerCallback):
    """Calls a model's training hooks from `transformers.Trainer`, as `scripts/train.py` does:
    `set_training_stage` at the start, `set_training_progress` (the fraction of steps done) before
    every step, and `on_epoch_end` with the training set after every epoch (its metrics are logged).

    Trainer trains one stage on one dataset with one optimizer: a model whose `training_stages`
    has several stages, or that `requires_source_dataset`, is refused; `scripts/train.py` trains
    those (fresh optimizer moments and learning-rate decay per stage, several data streams).
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        name = type(model).__name__
        if model.requires_source_dataset:
            raise ValueError(
                f"{name} trains on a source and a target dataset: use scripts/train.py"
            )
        stages = [
            (stage, n) for stage, n in model.training_stages(int(state.num_train_epochs)) if n
        ]
        if len(stages) > 1:
            raise ValueError(
                f"{name} trains in stages {stages} (from its config): use scripts/train.py, which "
                "gives each stage fresh optimizer moments and its own learning-rate decay"
            )
        model.set_training_stage(stages[0][0])

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        model.set_training_progress(state.global_step / state.max_steps)

    def on_epoch_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        metrics = model.on_epoch_end(round(state.epoch), {"target": train_dataloader.dataset})
        if metrics:
            logger.info(f"epoch {round(state.epoch)}: {metrics}")
