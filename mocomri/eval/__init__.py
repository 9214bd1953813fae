"""Evaluation of frozen encoders: features, linear probe and kNN, label fractions, CIs, report.

The entry point is :func:`run_probe`; :func:`format_table` prints its headline numbers.
"""

from __future__ import annotations

from mocomri.eval.report import format_table, format_task
from mocomri.eval.runner import ProbeOptions, run_probe

__all__ = ["ProbeOptions", "format_table", "format_task", "run_probe"]
