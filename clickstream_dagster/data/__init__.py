"""The RetailRocket dataset: streaming readers for the published files and a faithful generator."""
