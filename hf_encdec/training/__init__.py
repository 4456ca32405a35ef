"""How it is trained: train() top to bottom (run.py), the Trainer and its hooks, samplers, collator, checkpoints."""
