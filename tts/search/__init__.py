"""Decoding and search: one jitted sampler that every method builds on."""
