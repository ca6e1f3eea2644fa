"""Token streams: reading corpora, writing and reading Arrow shards, sampling windows."""
