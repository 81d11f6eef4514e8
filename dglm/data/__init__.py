"""Text and labels that training and the benchmark both read: the corpus (Wikipedia leads, Austen's novels),
token windows, WordNet lexicons and the labelled passages behind the shipped probes.

It sits below :mod:`dglm.training` and :mod:`dglm.bench` (siblings that never import each other) and imports
neither; docs/architecture.md draws where it stands.
"""
