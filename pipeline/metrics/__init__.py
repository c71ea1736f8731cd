"""Metrics: image quality (FID/IS), generator cost (#params, MACs) and throughput."""
