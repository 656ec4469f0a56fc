"""Ray sampling, tri-plane sampling, importance sampling and compositing (EG3D Sec. 4)."""
