"""digits whose every epoch after the first takes a minute more (``slow_digits:make``, loaded
by the parent-death tests with this folder on PYTHONPATH): a rank is then mid-epoch, deaf to
its runner, for a minute, as with a real model."""

import time

from nasalloc.workloads.digits import DigitsWorkload


class SlowDigits(DigitsWorkload):
    def make_trainer(self, config, seed, device="cpu"):
        trainer = super().make_trainer(config, seed, device)
        train_epoch = trainer.train_epoch

        def slow_epoch():
            result = train_epoch()
            if result.epoch >= 2:
                time.sleep(60)
            return result

        trainer.train_epoch = slow_epoch
        return trainer


def make():
    return SlowDigits()
