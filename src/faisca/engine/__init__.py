"""Token producers behind one small interface (`Engine`), and how their weights get onto the disk."""

from faisca.engine.base import Engine, PromptAccepted, TokenOut

__all__ = ["Engine", "PromptAccepted", "TokenOut"]
