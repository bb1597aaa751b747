"""Non-diffusion DNA → image generator families (conditional VAE, conditional GAN, plugin network).

:mod:`~phenogen.generators.base` holds the interface every family implements and the export / loading
code; :mod:`~phenogen.generators.features` the DNA condition; :mod:`~phenogen.generators.train` the shared
training loop behind ``phenogen train-generator``. Importing this package imports every family module,
which registers it in :data:`~phenogen.generators.base.FAMILIES`.
"""

from __future__ import annotations

import importlib

from phenogen.generators.base import (
    FAMILIES,
    Generator,
    GeneratorFamily,
    build_family,
    find_generator_dir,
    load_generator,
    register_family,
    save_generator,
)

__all__ = [
    "FAMILIES",
    "Generator",
    "GeneratorFamily",
    "build_family",
    "find_generator_dir",
    "load_generator",
    "register_family",
    "save_generator",
]

for _name in ("cvae", "gan", "plugin"):  # each registers itself; a family written later joins here
    try:
        importlib.import_module(f"phenogen.generators.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"phenogen.generators.{_name}":
            raise
