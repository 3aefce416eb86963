"""lowrank-lab: train LoRA adapters at many ranks and study their low-rank updates ΔW = (α/r)·B·A.

Modules, imports pointing one way: ``linalg`` (pure maths) → ``lora`` (the layer) → ``train``;
``models`` and ``data`` feed ``train``; ``config`` is the one experiment spec; ``runs`` owns every
path and file format; ``analysis`` turns saved runs into tidy tables; ``plotting`` and ``report``
turn tables into figures and documents.
"""

__version__ = "0.1.0"
