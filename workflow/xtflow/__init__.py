"""xtflow: fine-tune a chat model into a personal assistant with XTuner, reproducibly."""

__version__ = "0.1.0"
