"""The strong simple baselines every scenerec model is measured against.

Each baseline is fitted on a frame of interactions and scores every catalogue item for a chunk of
evaluation cases from their history (and scene), so one evaluation loop serves them all.
"""
