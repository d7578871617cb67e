"""Reports: plots, a lab-notebook Markdown page, and an automatic diagnosis of a run."""

from .diagnose import Finding, diagnose
from .notebook import write_report

__all__ = ["Finding", "diagnose", "write_report"]
