"""Image-quality metrics (FID, KID, precision/recall, IS, SWD) and their registry."""
