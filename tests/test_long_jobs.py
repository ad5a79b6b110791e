"""`infer.long_jobs`: long jobs compile the decode step by default, short ones stay eager, and deciding a short job
imports no compiler."""

from __future__ import annotations

import subprocess
import sys

from torch import nn

from auralm.infer import compiled, long_jobs


def test_short_jobs_stay_eager_and_long_ones_ask_compile_pays(monkeypatch):
    model = nn.Linear(2, 2)
    monkeypatch.setattr(compiled, "compile_pays", lambda m: (m is model, "fits"))
    assert long_jobs.long_job_compiles(model, items=999) == (
        False, "a short job (999 items; compiling pays from 1000 items or 60 min of audio)")
    assert long_jobs.long_job_compiles(model, audio_seconds=1800)[0] is False
    assert long_jobs.long_job_compiles(model, items=1000) == (True, "fits")
    assert long_jobs.long_job_compiles(model, audio_seconds=3600) == (True, "fits")
    monkeypatch.setattr(compiled, "compile_pays", lambda m: (False, "no memory"))
    assert long_jobs.long_job_compiles(model, items=5000) == (False, "no memory")


def test_a_short_job_imports_no_compiler():
    code = ("import sys; from torch import nn; from auralm.infer.long_jobs import long_job_compiles; "
            "long_job_compiles(nn.Linear(2, 2), items=3); print('auralm.infer.compiled' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
