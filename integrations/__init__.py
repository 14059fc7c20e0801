"""Adapters to the outside world: Tango fixes, Hugging Face export, W&B, shared workspaces."""
