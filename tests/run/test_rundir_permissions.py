"""Files written atomically get the permissions that a plain open() would give them."""

import stat

from microvqa_pp.run.rundir import atomic_write_bytes


def test_atomic_write_mode_matches_plain_open(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    atomic = tmp_path / "manifest.json"

    atomic_write_bytes(atomic, b"{}")

    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(atomic.stat().st_mode) & stat.S_IRGRP
