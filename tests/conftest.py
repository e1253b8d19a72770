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


@pytest.fixture(scope="session")
def write_toy_recipe():
    """A function writing a recipe TOML for the toy corpus and the tiny model: fp32, batch 4 × 64 bytes,
    one stage; `values` are the top-level keys (steps, minutes, warmup_steps, …), name first."""
    def write(path, **values):
        lines = [f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
                 for key, value in {"name": "toy", "batch_size": 4, "seq_len": 64, "lr": 3e-3, "precision": "fp32",
                                    **values}.items()]
        path.write_text("\n".join(lines) + '\n[model]\npreset = "tiny"\n[[stages]]\nname = "only"\n'
                        'corpora = { toy = 1.0 }\n')
        return path
    return write
