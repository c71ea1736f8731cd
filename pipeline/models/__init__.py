"""Generators (INR rows, StyleGAN2, INR-in-StyleGAN2), the discriminator, their specs and the registry."""
