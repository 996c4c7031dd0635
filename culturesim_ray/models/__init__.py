"""Model parts: pure torch, they return tensors; the loop owns losses and optimisers."""
