"""Numbers as the messages, labels and panels write them."""


def dimensions_text(dimensions) -> str:
    """256x256x128"""
    return "x".join(str(int(d)) for d in dimensions)


def numbers_text(values) -> str:
    """Spacing and the like: six significant digits, space-separated."""
    return " ".join(f"{v:.6g}" for v in values)
