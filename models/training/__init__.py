"""Fine-tuning runs: config, data, metrics, the Trainer-based runner and the job manager.

``runs.register()`` offers finished runs in the other tabs' pickers (the app calls it).
"""
