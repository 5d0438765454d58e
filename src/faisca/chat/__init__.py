"""From messages to prompt and back: chat templates that render the prompt, stop strings that end the answer."""

from faisca.chat.stops import StopMatcher
from faisca.chat.template import ChatTemplate

__all__ = ["ChatTemplate", "StopMatcher"]
