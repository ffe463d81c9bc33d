"""Tests of the documentation: README.md, docs/ and the READMEs beside the code."""
