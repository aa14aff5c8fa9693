"""Where benchmarks write their figures, and how: bench/results/<name>.json and .md.

Each file is written whole (temporary name, then rename), so a bench interrupted mid-write
leaves the previous results, never half of new ones.
"""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(directory: str, name: str, data, markdown: str) -> None:
    """`data` as <name>.json and `markdown` as <name>.md in `directory`; prints the Markdown."""
    # Imported here: importing TensorFlow must wait for each bench's environment setup.
    from models.atomic_files import write_text_atomically

    write_text_atomically(
        os.path.join(directory, f"{name}.json"), json.dumps(data, indent=2, sort_keys=True)
    )
    write_text_atomically(os.path.join(directory, f"{name}.md"), markdown)
    print(markdown)
