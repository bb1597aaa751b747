"""phenogen.report: one self-contained HTML page per run (``html``), its figures (``figures``), CLI (``command``)."""

from phenogen.report.html import RUN_LAYOUT, build_report

__all__ = ["build_report", "RUN_LAYOUT"]
