"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class LongreachError(Exception):
    """Bad input or an unsupported request, explained in one sentence."""
