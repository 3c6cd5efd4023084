"""``eoseg ensemble``: several bundles of one recipe as one bundle, from the command line."""

from click.testing import CliRunner

from eoseg.bundle import load_bundle
from eoseg.cli import main


def test_cli_ensemble_writes_a_bundle_and_reports_bad_members_in_one_line(bundle_factory, tmp_path):
    a = bundle_factory(tmp_path / "a", seed=1)
    b = bundle_factory(tmp_path / "b", seed=2)
    ok = CliRunner().invoke(main, ["ensemble", str(a), str(b), "--name", "pair", "--out", str(tmp_path / "e")])
    assert ok.exit_code == 0, ok.output
    assert load_bundle(tmp_path / "e").card.name == "pair"
    bad = CliRunner().invoke(main, ["ensemble", str(a), str(tmp_path / "missing"), "--name", "x",
                                    "--out", str(tmp_path / "f")])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "missing" in bad.output
    assert not (tmp_path / "f").exists()
