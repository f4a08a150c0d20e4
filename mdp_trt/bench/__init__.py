"""End-to-end model timing (``mdp-trt bench``, and ``prune`` before/after) on a latency backend."""
