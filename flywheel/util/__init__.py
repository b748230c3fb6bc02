"""Small helpers with no flywheel dependencies: files and time, progress bars, the packaged model's path."""
