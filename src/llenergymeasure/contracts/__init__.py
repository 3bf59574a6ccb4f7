"""Contracts between the sides: the result schema, the worker's wire types, identity."""
