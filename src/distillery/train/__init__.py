"""Training: packing traces into token bins, checkpoint conversion, and Megatron-core SFT."""
