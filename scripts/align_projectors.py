"""Decoding-side alignment of the output projectors on cached signal states of the final LLM (after stage 3).

    python scripts/align_projectors.py --data data/world --checkpoint checkpoints/nano [--steps 3000]

See nextgpt/training/projectors.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt.training.projectors import main  # noqa: E402

if __name__ == "__main__":
    main()
