"""One exception type for every user-facing failure.

Its message is a single line saying what is wrong and what to do; the CLI prints it and
exits with code 2 instead of showing a traceback.
"""


class AGIFormerError(Exception):
    """A problem with the user's input (file, argument, checkpoint, corpus), not a bug."""
