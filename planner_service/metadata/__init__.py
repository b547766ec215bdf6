"""Model metadata adapters: the I/O edge that turns a model name into a ModelSource.

``resolver.ModelResolver`` tries inline config -> local folder -> HF cache -> bundled catalog -> Hub;
``catalog`` is the offline catalog shipped in ``catalog/``; ``cache.MetadataCache`` is the shared
LRU+TTL cache of resolved sources. Import the submodules directly (this package imports nothing,
so importing the catalog does not pull in huggingface_hub).
"""
