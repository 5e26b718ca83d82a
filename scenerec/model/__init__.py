"""The joint recommender: collaborative ID embeddings + text tower + scene/context tower.

Notation used in every module of this package:
    B  batch (requests or training sequences)
    L  history length (model.max_history)
    N  catalogue size (items)
    C  candidates per request (ranking stage)
    D  model dimension (model.dim)
    T  text embedding dimension of the frozen encoder (384 for MiniLM)
    S  scenes; Ds scene embedding width (model.scene_dim)
    Dt transition width (model.transition_dim)
    Q  width of the retrieval vectors (query and item side): D + Dt + D + Ds + 1
"""
