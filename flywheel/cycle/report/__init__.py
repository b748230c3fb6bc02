"""Promotion reports: typed content, files on disk (JSON + HTML), and the HTML page."""
