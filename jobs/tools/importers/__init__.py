"""Importers that load public data sets into the app-owned source tables.

One module per data set. Each keeps conversion (a pure function from the raw file's frame to
source-table frames plus skip counts per reason) apart from reading the file and writing.
"""
