"""What every error message of the package shares. Imports nothing of the package."""


def first_line(error):
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
