"""What a finished training run reports: held-out success before and after RL, and the RL phase's
paired gain, as `report.json` and as the lines the command line prints."""

from __future__ import annotations


def report_lines(report: dict) -> list[str]:
    """The run's result in two or three lines for the terminal."""
    lines = []
    before, after, gain = report["heldout_success_before"], report["heldout_success_after"], report["rl_gain"]
    if before is not None:
        lines.append(f"held-out success: random {report['heldout_success_random']:.3f}, untrained "
                     f"{report['heldout_success_untrained']:.3f}, before RL {before:.3f}, after RL {after:.3f}")
        interval = "" if gain["low"] is None else f" (95% CI {100 * gain['low']:+.1f} to {100 * gain['high']:+.1f})"
        lines.append(f"RL gain: {100 * gain['mean']:+.1f} points on {gain['n']} paired episodes{interval}")
    lines.append(f"run: {report['run']} done in {report['wall_seconds']:.0f} s")
    return lines
