"""MetricsProgress: the driver's bar follows rows another process appends (SFT stages)."""
from medmo_rl.metrics_log import MetricsProgress, MetricsWriter


def test_the_bar_follows_appended_rows_and_a_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    with MetricsProgress(path, desc="SFT stage2", show=("loss",), poll_s=3600) as progress:
        progress.poll()  # no file yet: nothing to show
        assert progress.bar.n == 0 and progress.bar.total is None
        for step, loss in ((10, 2.5), (20, 1.25)):
            w.write(step, {"loss": loss, "total_steps": 50})
        with open(path, "a") as f:
            f.write('{"step": 30, "loss"')  # a row still being written
        progress.poll()
        assert (progress.bar.n, progress.bar.total) == (20, 50)
        assert progress.bar.postfix == "loss=1.250"
        with open(path, "a") as f:
            f.write(': 0.5, "total_steps": 50}\n')
        progress.poll()
        assert progress.bar.n == 30 and progress.bar.postfix == "loss=0.500"
        w.truncate_after(10)  # a resumed run rewrites the steps after its checkpoint
        w.write(11, {"loss": 2.0, "total_steps": 50})
        progress.poll()
        assert progress.bar.n == 11
