"""Framework contribs that need more than a function: :mod:`soniq.contrib.django`."""
