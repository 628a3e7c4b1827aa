"""Stage 4-5 of the loop: the model registry, export and quantization.

- :mod:`loopml.models.signature`: what goes in and comes out (inferred from an input example)
- :mod:`loopml.models.export`: ONNX, ``torch.export`` (.pt2) and ExecuTorch (.pte) files, checked against eager
- :mod:`loopml.models.runtime`: run a stored format without the code that defined the model
- :mod:`loopml.models.quantize`, :mod:`loopml.models.tqt`: int8 / int4 variants, incl. trained quantization thresholds
- :mod:`loopml.models.registry`: versions, aliases, ``register`` and ``load_model``

Submodules import torch, ONNX and friends; this package imports nothing heavy.
"""
