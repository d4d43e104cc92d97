"""River's drift detectors and statistics, imported without scikit-learn.

River imports its scikit-learn dataset adapter whenever scikit-learn is installed (it is:
training needs it), and with it scikit-learn, SciPy and pandas: ~100 MiB of a worker's
resident memory for something the monitor never uses. A ``None`` entry in ``sys.modules``
makes that optional import raise ImportError, which River expects and skips. Import River
through this module in worker code.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("river.stream.iter_sklearn", None)  # type: ignore[arg-type]

from river import drift, metrics, stats, utils  # noqa: E402

__all__ = ["drift", "metrics", "stats", "utils"]
