"""SageMaker instance types rlrunner accepts: a table checked into the project, with its date and source.

The table (`instance_types.json`) is the `TrainingInstanceType` and `ProductionVariantInstanceType`
enums of the SageMaker API model that botocore ships; regenerate it on purpose with
`python -m rlrunner.instance_types` (it needs only botocore, which the SDK extra installs).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).with_name("instance_types.json")


@cache
def load_instance_types() -> dict[str, Any]:
    """The checked-in table: `training` and `hosting` type lists, `date` and `source`."""
    table: dict[str, Any] = json.loads(TABLE_PATH.read_text())
    return table


def training_types() -> frozenset[str]:
    """Instance types a SageMaker training job accepts."""
    return frozenset(load_instance_types()["training"])


def hosting_types() -> frozenset[str]:
    """Instance types a SageMaker endpoint accepts."""
    return frozenset(load_instance_types()["hosting"])


def generate_table() -> dict[str, Any]:
    """Read the enums from the installed botocore's SageMaker service model."""
    import botocore

    folder = Path(botocore.__file__).parent / "data" / "sagemaker" / "2017-07-24"
    model_file = next(folder.glob("service-2.json*"))
    raw = model_file.read_bytes()
    shapes = json.loads(gzip.decompress(raw) if model_file.suffix == ".gz" else raw)["shapes"]
    return {
        "date": dt.date.today().isoformat(),
        "source": f"botocore {botocore.__version__} data/sagemaker/2017-07-24/{model_file.name}: shapes "
        "TrainingInstanceType (training) and ProductionVariantInstanceType (hosting)",
        "training": sorted(shapes["TrainingInstanceType"]["enum"]),
        "hosting": sorted(shapes["ProductionVariantInstanceType"]["enum"]),
    }


def main() -> None:
    """Regenerate the checked-in table from the installed botocore."""
    TABLE_PATH.write_text(json.dumps(generate_table(), indent=1) + "\n")
    print(f"wrote {TABLE_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
