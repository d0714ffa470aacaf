"""Commands beside the stages: `import_torch` (official PyTorch checkpoints -> exports)."""
