"""What is trained: building the model (pretrained, warm-started pair, from scratch), adapters (LoRA, QLoRA, merge),
safe loading, per-family tables, and the decoding loops that both evaluation and generation use."""
