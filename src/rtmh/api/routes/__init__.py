"""One router per resource under /api/v1; each module says which service functions it calls."""
