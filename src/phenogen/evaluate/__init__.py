"""phenogen.evaluate: score generated images against ground truth, beside baselines.

Module map: ``metrics`` (:func:`evaluate`, the metrics.json writer), ``steps`` (the stages of one
run), ``targets`` (generated.tsv ↔ dataset records, image cache), ``probe`` (trait-probe CNN),
``baselines`` (nearest / random / mean / oracle / truth), ``retrieval`` (DNA→image success),
``fid`` (FID/KID on probe features), ``photo`` (photo model: species/genus/family/order CNN trained on
training photos), ``photo_scores`` (the scores that need no traits: retrieval top-1/5/100, similarity,
FID/KID, taxonomic agreement on photo features), ``plots``, ``config`` (``[evaluate]``), ``command`` (CLI).
torch is imported only when a function needs it.
"""

from phenogen.evaluate.config import METHODS, EvaluateConfig
from phenogen.evaluate.metrics import SCHEMA_VERSION, evaluate

__all__ = ["evaluate", "EvaluateConfig", "METHODS", "SCHEMA_VERSION"]
