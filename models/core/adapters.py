"""What a LoRA adapter folder holds beside peft's own files: a token classifier's label set.

peft saves the adapter and names its base; the base model's config has no labels for a freshly
trained tagging head, so training writes them here and every loader (the NER tab, merging) reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS_FILE = "labels.json"  # ["O", "B-PER", ...]: index = the head's output id


def save_labels(id2label: dict[int, str], folder: Path) -> None:
    """Record a token-classification adapter's labels in ``folder``."""
    labels = [id2label[i] for i in range(len(id2label))]
    (Path(folder) / LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")


def label_kwargs(folder: Path) -> dict:
    """from_pretrained kwargs that give a token-classification adapter's base the right label set ({} if none)."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return {}
    labels = json.loads(path.read_text(encoding="utf-8"))
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {t: i for i, t in enumerate(labels)}}
