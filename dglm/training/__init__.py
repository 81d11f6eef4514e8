"""Training: windows of real text, cached embeddings, the diffusion and prompt-generator loops."""
