"""Plots, tables and the findings summary, from the select and flops stages' files."""
