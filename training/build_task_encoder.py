"""Rebuild the task detector's embedding (router_ml/loop/task_encoder/): all-MiniLM-L6-v2
distilled to 128 dimensions, packed to 4 bits. Distilling again can move a few codes by one
step from one CPU to another; rebuild only on purpose, and paste the printed sha256s into
router_ml/loop/tasks.py (_ENCODER_SHA256)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router_ml.loop.tasks import build_task_encoder

if __name__ == "__main__":
    for name, digest in build_task_encoder(ROOT / "router_ml" / "loop" / "task_encoder").items():
        print(f'    "{name}": "{digest}",')
