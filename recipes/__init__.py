"""nim4_edge.recipes: training recipes and the synthetic data they use (car noise, speech)."""
