"""Real training: the standard-library corpus, a small MoE transformer, training runs and GEMM traces."""
