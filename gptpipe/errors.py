"""The one exception type for bad input: the CLI turns it into exit status 2."""


class BadInput(Exception):
    """Bad params, data or files. The message is one line naming the key or file."""


class ConfigError(BadInput):
    """A params key with a wrong type or an impossible value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"params key '{key}': {message}")
        self.key = key
