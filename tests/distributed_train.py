"""Run by test_distributed.py under torchrun: hf_encdec.train(CONFIG_JSON), then every process writes
a digest of its trained weights to DIGEST_DIR/<rank>.txt, so the test can compare the ranks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from hf_encdec.training import run as training


class WeightDigest(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        Path(os.environ["DIGEST_DIR"], f"{args.process_index}.txt").write_text(digest.hexdigest())


def build_trainer_with_digest(*args, **kwargs):
    trainer = build_trainer(*args, **kwargs)
    trainer.add_callback(WeightDigest())
    return trainer


logging.basicConfig(level=logging.INFO, format="%(message)s")
build_trainer = training.build_trainer
training.build_trainer = build_trainer_with_digest
training.train(json.loads(sys.argv[1]))
