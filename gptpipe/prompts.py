"""The Alpaca prompt template, shared by instruction tuning, sampling, chat and the server;
and how a conversation of several messages becomes one prompt."""

from __future__ import annotations

from collections.abc import Sequence

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def format_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt; the `### Input:` block is left out when `input` is empty."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{instruction}\n\n"
    if input:
        text += f"### Input:\n{input}\n\n"
    return text + "### Response:\n"


def conversation_prompt(messages: Sequence[tuple[str, str]], instruct: bool) -> str:
    """The prompt a model continues for a conversation of (role, text) messages (system,
    user, assistant), ending with the user's turn to answer.

    An instruction-tuned model (Alpaca, which has no dialogue) gets the last user message as
    the instruction and everything said before it, system messages first, as the input:
    "User: ..." and "Assistant: ..." lines. A base model continues the conversation's text:
    the messages one after another, each on its own line, as `gptpipe chat` keeps them.
    """
    last = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=None)
    if not instruct:
        return "\n".join(text for _, text in messages) + ("\n" if messages else "")
    if last is None:
        raise ValueError("a conversation needs a user message to answer")
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    before = [f"{names.get(role, role)}: {text}" for role, text in messages[:last]]
    after = [f"{names.get(role, role)}: {text}" for role, text in messages[last + 1 :]]
    return format_prompt(messages[last][1], "\n".join(before + after))
