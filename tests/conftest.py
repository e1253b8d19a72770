import random

import pytest

from agiformer.data import build_user_corpus

WORDS = ("the cat sat on a mat while dogs ran far away from home and birds sang over green hills "
         "in the quiet morning light").split()


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A small built corpus named 'toy' (40 documents of simple English) in its own data directory."""
    root = tmp_path_factory.mktemp("toy")
    rng = random.Random(0)
    for i in range(40):
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / f"doc{i}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(300)) + ".")
    build_user_corpus("toy", [str(root / "src")], root / "data", progress=False)
    return root / "data"
