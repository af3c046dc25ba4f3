"""The built-in job kinds, one module each; the registry imports every module here, so adding
a kind is adding a module (no other file changes)."""
