"""Fine-tuning runs: config, data, metrics, the Trainer-based runner and the job manager.

Importing the package registers finished runs as models in the other tabs' pickers.
"""

from models.training import runs  # noqa: F401  (registers the finished-runs provider)
