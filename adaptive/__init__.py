"""Adaptive elicitation: the numerical core (DESIGN section 8). Plain numpy/scipy, no Django.

- ``model``: the grid posterior over each pair's psychometric function and the
  likelihood of every interface's answer.
- ``chooser``: the next trial by expected information gain, and the midpoint staircase.
- ``agreement``: Krippendorff's alpha, test-retest and per-participant reliability.
- ``hmix_fit``: H-Mix judgments in pair-canonical form and the noise levels fitted to them.
- ``simulate``: simulated participants fitted to H-Mix.
"""
