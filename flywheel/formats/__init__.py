"""Reading users' files: labelled pairs, corpora, BEIR folders, all through one record reader."""
