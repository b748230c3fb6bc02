"""Scheduled entry point: run one retraining cycle on the configured data dir (e.g. from cron or a k8s CronJob).

Thin on purpose: the same as `flywheel retrain`. When `flywheel serve` owns the data dir, the cycle runs
inside the server (through its admin API); otherwise it runs here. Exit code 0 for promoted or rejected, 1
for a failed cycle.

    FLYWHEEL_DATA_DIR=/var/lib/flywheel python jobs/retrain.py [--mode adapter|full] [--config flywheel.toml]
"""

import sys

from flywheel.cli import app

if __name__ == "__main__":
    sys.exit(app(["retrain", *sys.argv[1:]]))
