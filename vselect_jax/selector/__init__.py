"""VisionSelector: importance scorer, differentiable top-k and selection."""
