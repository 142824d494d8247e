"""The training progress a person sees: a bar on a terminal, plain lines in logs."""

from __future__ import annotations

import io

from aigc.cli.tune.common import TrainPrinter
from aigc.tune import TrainProgress


def feed(printer: TrainPrinter) -> None:
    printer(TrainProgress(phase="loading", note="loading SmolLM2-135M-Instruct on cpu"))
    for step in range(1, 21):
        printer(TrainProgress(phase="training", step=step, max_steps=20, loss=2.0 / step, elapsed_s=step * 1.5,
                              eta_s=(20 - step) * 1.5, tokens_per_s=120.0))
    printer(TrainProgress(phase="saving", step=20, max_steps=20, note="writing models/x"))
    printer.close()


def test_a_terminal_gets_one_redrawn_bar_with_step_loss_and_eta():
    stream = io.StringIO()
    feed(TrainPrinter(stream, tty=True))
    text = stream.getvalue()
    assert text.count("\r") == 20 and "step 20/20  loss 0.1000  eta 0:00  120 tok/s" in text
    assert "[############------------] step 10/20  loss 0.2000  eta 0:15" in text
    assert text.rstrip().endswith("aigc tune: writing models/x")


def test_logs_get_a_plain_line_per_tenth_of_the_run():
    stream = io.StringIO()
    feed(TrainPrinter(stream, tty=False))
    lines = stream.getvalue().splitlines()
    training = [line for line in lines if " step " in line]
    assert "\r" not in stream.getvalue()
    assert len(training) == 11 and training[0].startswith("aigc tune: step 1/20 ")  # the first step, then each tenth
    assert training[-1] == "aigc tune: step 20/20 loss 0.1000 elapsed 0:30 eta 0:00  120 tok/s"
    assert lines[0] == "aigc tune: loading SmolLM2-135M-Instruct on cpu" and lines[-1] == "aigc tune: writing models/x"
