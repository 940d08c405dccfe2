"""Exports are chosen with a comment marker, for example:

#%function%
def exported(): ...

This file has no real marker, so every public function is exported.
"""

TEMPLATE = '''
#%function%
'''


def first():
    pass


def _second():
    pass


def third(template=TEMPLATE):
    """Uses the template."""
