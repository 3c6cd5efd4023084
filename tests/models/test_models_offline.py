"""eoseg never reaches for the network: a fresh process with sockets refused and no HF_HUB_OFFLINE loads the
packaged bundle, builds every architecture (each smp one and every model config in configs/) and predicts.

conftest sets HF_HUB_OFFLINE=1 for the test process, which hides a download attempt instead of revealing it;
this test runs in a child process without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r'''
import json, socket, sys

attempts = []
_connect = socket.socket.connect


def refuse(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        attempts.append(repr(address))
        raise OSError("network access refused by the offline test")
    return _connect(self, address, *args)


def refuse_lookup(host, *args, **kwargs):
    attempts.append(repr(host))
    raise socket.gaierror("name lookup refused by the offline test")


socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse_lookup

try:  # the guard itself works
    socket.create_connection(("example.org", 80), timeout=1)
except OSError:
    pass
guard_works = attempts == ["'example.org'"]
attempts.clear()

from pathlib import Path
from eoseg.config import TrainConfig, load_config
from eoseg.models import available_models, build_model, get_spec
from eoseg.predict import predict_scene
from eoseg.train import build_network

built = []
for name in available_models():
    if get_spec(name).fixed.get("arch"):
        build_model(name, 4, 4, encoder_name="resnet18", encoder_weights=None)
        built.append(name)
from eoseg.config import read_yaml

for path in sorted(Path(sys.argv[1], "configs").glob("*.yaml")):
    if "model" not in read_yaml(path):
        continue  # a dataset config
    cfg = load_config(TrainConfig, path)
    assert cfg.model.params.get("encoder_weights") is None, path
    build_network(cfg, len(cfg.bands or (1, 2, 3)), 4)
    built.append(path.name)
result = predict_scene(sys.argv[2], "resunet", sys.argv[3], precision="fp32", progress=False)
print(json.dumps({"guard_works": guard_works, "attempts": attempts, "built": built,
                  "outputs": sorted(result.outputs)}))
'''


def test_no_network_is_attempted(s2_scene, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["HF_HOME"] = str(tmp_path / "hf")  # nothing cached to fall back on
    env["TORCH_HOME"] = str(tmp_path / "torch")
    run = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(s2_scene), str(tmp_path / "out")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["guard_works"]
    assert report["attempts"] == []
    assert {"smp-unet", "deeplabv3plus", "unet-resnet34.yaml", "resunet.yaml"} <= set(report["built"])
    assert report["outputs"] == ["classes", "polygons", "stac", "style"]
