"""Tables and figures every study shares, the papers' published numbers and the paper index."""
