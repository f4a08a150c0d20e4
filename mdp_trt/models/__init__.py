"""Model recipes: torchvision architectures built offline (weights=None, seeded) and exported."""
