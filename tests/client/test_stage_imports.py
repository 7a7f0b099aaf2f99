"""A protocol stage that does not train loads neither PyTorch nor pandas.

In the Deployment Engine every message an institution receives starts a fresh
ClientApp process. Most stages of a secure round only handle keys and shares;
before, each of them imported PyTorch (about 2 s of CPU) through the run
settings' FedProx bound, and pandas through the policy's feature list, so a
three-institution round on two cores spent most of its time importing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fedfraud.simulation import default_run_config, project_dir
from fedfraud.sites import prepare_demo_sites
from fraud.generator_files import ensure_federation_data
from secagg.protocol import Field

NAMES = ("bank-a", "bank-b", "insurer-c")

CHILD = r"""
import json, sys
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity
from client.app import app
from secagg.protocol import PROTOCOL_NAME, RECORD, Field, Stage

config, fields = json.loads(sys.argv[1]), json.loads(sys.argv[2])
context = Context(run_id=1, node_id=101, node_config={"partition-id": 0}, state=RecordDict(), run_config=config)
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
content = RecordDict()
content.config_records[RECORD] = ConfigRecord(
    {Field.STAGE: Stage.SETUP.value, Field.PROTOCOL: PROTOCOL_NAME, **fields}
)
reply = app(Message(content=content, dst_node_id=101, message_type=MessageType.TRAIN, group_id="1"), context)
print(json.dumps({
    "error": reply.error.reason if reply.has_error() else "",
    "loaded": [name for name in ("torch", "pandas", "sklearn") if name in sys.modules],
}))
"""


def test_setup_stage_of_a_real_clientapp_imports_no_torch_or_pandas(tmp_path: Path) -> None:
    ensure_federation_data(tmp_path / "data", list(NAMES), 600, 3)
    sites = prepare_demo_sites(tmp_path / "demo", NAMES, project_dir() / "policies")
    config = default_run_config() | {
        "institutions": ",".join(NAMES), "data-dir": str(tmp_path / "data"),
        "sites-dir": str(sites.sites_dir), "server-dir": str(sites.server_dir),
        "run-dir": str(tmp_path / "run"), "run-name": "imports",
    }
    fields = {
        Field.TASK.value: "train", Field.NUM_SHARES.value: 3, Field.THRESHOLD.value: 2,
        Field.CLIPPING_RANGE.value: 8.0, Field.QUANTIZATION_RANGE.value: 2**24,
        Field.MODULUS_RANGE.value: 2**32, Field.MAX_WEIGHT.value: 100000.0, Field.SAMPLE_NUM.value: 3,
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config), json.dumps(fields)],
        capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == ""  # the stage really ran, and answered
    assert outcome["loaded"] == []
