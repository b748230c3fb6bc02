"""The retraining cycle: mining, split, train, evaluate, gate, swap, report; and the runner that schedules it."""
