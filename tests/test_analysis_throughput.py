"""Smoke run of benchmarks/analysis_throughput.py with --quick (a few seconds): it runs end to end,
its batched results agree with the references on the subsample, and its last line carries every
figure docs/benchmarks.md quotes. No timing is asserted."""

from benchmarks.analysis_throughput import main


def test_quick_benchmark_runs_and_prints_the_summary_line(capsys):
    main(["--quick"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("machine: ")
    assert "python -m benchmarks.analysis_throughput --quick" in out
    assert "usedlag equal: True" in out and "lags equal: True" in out
    summary = dict(item.split("=") for item in lines[-1].split())
    assert list(summary) == [
        "adf_speedup",
        "kpss_speedup",
        "acf_speedup",
        "welch_speedup",
        "full_pipeline_s",
        "peak_rss_gib",
    ]
    assert all(float(value) > 0 for value in summary.values())
