"""Custom ops with upstream's call signatures. Each takes `impl=`: 'ref' is plain PyTorch (any device,
autograd to any order), 'fused' a compiled kernel where one is built, 'auto' the fused one when it can
serve the call and 'ref' otherwise. `<op>.last_impl` names what served the last call."""
