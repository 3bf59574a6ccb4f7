"""The result schema and the aggregation of results into confidence intervals."""
