"""PLACEHOLDER until its owner writes it."""


def command() -> None:
    raise NotImplementedError
