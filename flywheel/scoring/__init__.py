"""Metrics on numbers: the seed's pair error, IR metrics, paired bootstrap CIs (numpy and scikit-learn only)."""
