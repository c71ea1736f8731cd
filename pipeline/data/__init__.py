"""Datasets: synthetic faces, raw readers, preparation and the prepared-dataset reader."""
