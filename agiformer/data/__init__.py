"""The data layer: named and user corpora, their train/val/test splits, samplers and baselines.

It knows nothing about models: everything here works on bytes, numpy arrays and LongTensors.
"""

from agiformer.data.build import SEPARATOR, BuildResult, build_corpus, build_user_corpus
from agiformer.data.compressors import compression_baselines, corpus_compression_baselines
from agiformer.data.corpora import CORPORA, PINNED_PACKAGES, stdlib_source
from agiformer.data.dataset import disjoint_windows, list_corpora, load_split, mixture_windows, random_windows
from agiformer.data.facts import LONGEST_FACT, plant_facts
from agiformer.data.manifest import SPLITS, read_manifest

__all__ = [
    "CORPORA",
    "PINNED_PACKAGES",
    "LONGEST_FACT",
    "SEPARATOR",
    "SPLITS",
    "BuildResult",
    "build_corpus",
    "build_user_corpus",
    "compression_baselines",
    "corpus_compression_baselines",
    "disjoint_windows",
    "list_corpora",
    "load_split",
    "mixture_windows",
    "plant_facts",
    "random_windows",
    "read_manifest",
    "stdlib_source",
]
